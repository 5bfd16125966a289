package yamux

// Postern: tests of ReadInPlace (inplace.go).

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// What ReadInPlace returns, in turn, is everything the peer sent, in
// order; the stream's two buffers are counted against the budget while
// it holds them and given back by Shrink once it is empty.
func TestReadInPlaceDeliversEverythingAndCountsBothBuffers(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = 1 << 20
	conf.Buffer = NewBudget(64<<20, nil)
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	go func() {
		for off := 0; off < len(data); off += 50000 {
			if _, err := c.Write(data[off:minInt(off+50000, len(data))]); err != nil {
				return
			}
		}
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got bytes.Buffer
	most := int64(0)
	for {
		p, err := s.ReadInPlace()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got.Len(), err)
		}
		got.Write(p)
		s.recvLock.Lock()
		held := s.held + s.spareHeld
		var caps int64
		if s.recvBuf != nil {
			caps += int64(s.recvBuf.Cap())
		}
		if s.spare != nil {
			caps += int64(s.spare.Cap())
		}
		s.recvLock.Unlock()
		if held != caps {
			t.Fatalf("budget counts %d bytes for the stream, its buffers hold %d", held, caps)
		}
		if u := conf.Buffer.Used(); u > most {
			most = u
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d bytes in place, not the %d sent", got.Len(), len(data))
	}
	if most > 2<<20 {
		t.Errorf("the stream held %d bytes at most, want at most two windows", most)
	}
	s.Shrink()
	if n := conf.Buffer.Used(); n != 0 {
		t.Errorf("%d bytes still counted after Shrink", n)
	}
}

// Read and ReadInPlace mix: a Read after ReadInPlace reads on from the
// stream's other buffer, and the bytes lent stay intact until the next
// ReadInPlace.
func TestReadInPlaceMixesWithRead(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.Buffer = NewBudget(64<<20, nil)
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	c.Write([]byte("first"))
	p, err := s.ReadInPlace()
	if err != nil || string(p) != "first" {
		t.Fatalf("ReadInPlace: %q, %v", p, err)
	}
	c.Write([]byte("second"))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "second" {
		t.Fatalf("Read: %q, %v", buf, err)
	}
	if string(p) != "first" {
		t.Fatalf("lent bytes changed to %q before the next ReadInPlace", p)
	}
	c.Write([]byte("third"))
	if p, err = s.ReadInPlace(); err != nil || string(p) != "third" {
		t.Fatalf("ReadInPlace: %q, %v", p, err)
	}
}

// In a steady transfer the two buffers are reused, not reallocated.
func TestReadInPlaceReusesItsBuffers(t *testing.T) {
	conf := testConfNoKeepAlive()
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	chunk := make([]byte, 32<<10)
	roundTrip := func() {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(chunk); {
			p, err := s.ReadInPlace()
			if err != nil {
				t.Fatal(err)
			}
			n += len(p)
		}
	}
	for i := 0; i < 4; i++ {
		roundTrip() // both buffers grown
	}
	seen := map[*byte]bool{}
	for i := 0; i < 8; i++ {
		roundTrip()
		s.recvLock.Lock()
		for _, b := range []*bytes.Buffer{s.recvBuf, s.spare} {
			if b != nil && b.Cap() > 0 {
				seen[&b.AvailableBuffer()[:1][0]] = true
			}
		}
		s.recvLock.Unlock()
	}
	if len(seen) > 2 {
		t.Errorf("%d different buffer arrays over 8 transfers, want the same two", len(seen))
	}
}
