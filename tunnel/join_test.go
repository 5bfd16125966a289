package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"runtime"
	"testing"

	"github.com/postern-tunnel/postern/wire"
)

// recordConn stands for the TLS connection under a tunnelConn: it keeps
// each write as one record would be.
type recordConn struct {
	net.Conn
	writes [][]byte
	keep   bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.keep {
		c.writes = append(c.writes, append([]byte(nil), p...))
	}
	return len(p), nil
}

func dataHeader(n int) []byte {
	h := make([]byte, wire.MuxHeaderSize)
	binary.BigEndian.PutUint32(h[8:12], uint32(n))
	return h
}

// A small data frame goes to TLS as one write (one record), header and
// body joined; a large one is passed on as it came, with no copy: its
// body takes several records anyway.
func TestTunnelConnJoinsSmallFrames(t *testing.T) {
	rc := &recordConn{keep: true}
	c := &tunnelConn{Conn: rc}
	small, large := bytes.Repeat([]byte("s"), 100), bytes.Repeat([]byte("L"), 64<<10-wire.MuxHeaderSize)
	for _, body := range [][]byte{small, large, small} {
		if _, err := c.Write(dataHeader(len(body))); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write(body); err != nil || n != len(body) {
			t.Fatalf("body write: %d, %v", n, err)
		}
	}
	want := [][]byte{
		append(dataHeader(len(small)), small...),
		dataHeader(len(large)), large,
		append(dataHeader(len(small)), small...),
	}
	if len(rc.writes) != len(want) {
		t.Fatalf("%d writes to TLS, want %d", len(rc.writes), len(want))
	}
	for i := range want {
		if !bytes.Equal(rc.writes[i], want[i]) {
			t.Errorf("write %d: %d bytes, want %d", i, len(rc.writes[i]), len(want[i]))
		}
	}
}

// heapPerTunnel keeps what bulkTunnel returns (a tunnel's connection
// after a bulk write) for 200 tunnels and returns the heap each holds once
// collected.
func heapPerTunnel(bulkTunnel func() any) int64 {
	const tunnels = 200
	kept := make([]any, tunnels)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range kept {
		kept[i] = bulkTunnel()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	return (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / tunnels
}

// A tunnel that once carried a bulk transfer keeps no buffer for it: a hub
// with thousands of partners would otherwise hold one per tunnel (64 KiB
// and more) for as long as the tunnel lives.
func TestTunnelConnKeepsNoBufferAfterBulk(t *testing.T) {
	body := make([]byte, 64<<10-wire.MuxHeaderSize)
	per := heapPerTunnel(func() any {
		c := &tunnelConn{Conn: &recordConn{}}
		c.Write(dataHeader(len(body)))
		c.Write(body)
		small := []byte("small frame")
		c.Write(dataHeader(len(small)))
		c.Write(small)
		return c
	})
	if per > 8<<10 {
		t.Errorf("each tunnel holds %d bytes of heap after a bulk frame, want under 8 KiB", per)
	}
}

// The same for the records a tunnel gathers under TLS: once sent, the
// batch's buffer is not kept for the tunnel's life.
func TestBatchConnKeepsNoBufferAfterBulk(t *testing.T) {
	record := make([]byte, 16<<10+29)
	per := heapPerTunnel(func() any {
		b := &batchConn{Conn: &recordConn{}}
		b.enable()
		for r := 0; r < 4; r++ {
			b.Write(record)
		}
		if err := b.Flush(); err != nil {
			t.Error(err)
		}
		return b
	})
	if per > 8<<10 {
		t.Errorf("each tunnel holds %d bytes of heap after sending a 64 KiB batch, want under 8 KiB", per)
	}
}
