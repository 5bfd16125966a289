//go:build unix

package rawio_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/rawio"
)

// pair returns a wrapped client end and the plain server end of a loopback
// TCP connection.
func pair(t *testing.T) (*rawio.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	w, ok := rawio.Wrap(c).(*rawio.Conn)
	if !ok {
		if rawio.Supported {
			t.Fatalf("Wrap of a TCP connection gave %T", rawio.Wrap(c))
		}
		t.Skip("raw system calls are not used on this system")
	}
	return w, s.(*net.TCPConn)
}

// TestConnCarriesBytesBothWays: a large write completes whole while the
// reader lags (the writer waits in the poller, not in a busy loop), and
// reads return what was sent, in order, then end-of-stream at the FIN.
func TestConnCarriesBytesBothWays(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 8<<20) // larger than both socket buffers: the write must wait
	rand.Read(want)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		got <- b
	}()
	n, err := c.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(want))
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the other end read %d bytes, not the %d written", len(b), len(want))
	}

	go func() {
		s.Write(want[:100000])
		s.CloseWrite()
	}()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, want[:100000]) {
		t.Fatalf("ReadAll: %d bytes, %v; want 100000 bytes, nil", len(b), err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end: %d, %v; want 0, EOF", n, err)
	}
}

// TestConnErrorsAsTCP: deadlines, a reset and a local close give the errors
// a TCP connection gives, so callers' checks hold.
func TestConnErrorsAsTCP(t *testing.T) {
	c, s := pair(t)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Net != "tcp" || oe.Addr.String() != s.LocalAddr().String() {
		t.Fatalf("Read past its deadline: %#v; want a read OpError naming the peer", err)
	}
	c.SetReadDeadline(time.Time{})

	s.SetLinger(0)
	s.Close() // a reset
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after the peer's reset: %v; want ECONNRESET", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "read" {
		t.Fatalf("Read after the peer's reset: %#v; want the read system call named", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write after the peer's reset succeeded")
	}

	c.Close()
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
}

// TestConnWriteDeadline: a write that cannot finish by its deadline returns
// what the socket took and a timeout.
func TestConnWriteDeadline(t *testing.T) {
	c, _ := pair(t)             // the other end never reads
	big := make([]byte, 64<<20) // before the deadline starts: the write itself must begin in time
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past its deadline: %d, %v; want a timeout", n, err)
	}
	if n <= 0 || n >= 64<<20 {
		t.Fatalf("Write past its deadline took %d bytes; want what the socket buffers held", n)
	}
}

// TestWrapLeavesOthers: only TCP connections are wrapped.
func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := rawio.Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe end) = %T, want it unchanged", got)
	}
}

// TestConnLingerAndHalfClose: SetLinger and CloseWrite, made with raw
// system calls, do what the TCP connection's own do: linger 0 makes Close
// a reset, linger off makes it a FIN, CloseWrite ends one direction while
// the other still flows; on a closed connection both fail as the TCP
// connection's own fail.
func TestConnLingerAndHalfClose(t *testing.T) {
	c, s := pair(t)
	s.SetReadDeadline(time.Now().Add(10 * time.Second)) // a missing FIN fails, not hangs
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("the other end read %q, %v after CloseWrite; want a clean end", b, err)
	}
	s.Write([]byte("still flowing"))
	buf := make([]byte, 13)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still flowing" {
		t.Fatalf("Read after CloseWrite: %q, %v", buf, err)
	}

	c, s = pair(t)
	if err := c.SetLinger(0); err != nil {
		t.Fatalf("SetLinger(0): %v", err)
	}
	c.Close()
	if _, err := s.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a Close with linger 0: %v; want ECONNRESET", err)
	}

	c, s = pair(t)
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.SetLinger(0)
	if err := c.SetLinger(-1); err != nil { // armed, then disarmed
		t.Fatalf("SetLinger(-1): %v", err)
	}
	c.Close()
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("Read after a Close with linger off: %q, %v; want a clean end", b, err)
	}

	// After Close: the same errors as the TCP connection's own.
	tcp := s
	tcp.Close()
	for _, m := range []struct {
		name      string
		raw, want error
	}{
		{"SetLinger", c.SetLinger(0), tcp.SetLinger(0)},
		{"CloseWrite", c.CloseWrite(), tcp.CloseWrite()},
	} {
		var got, want *net.OpError
		if !errors.As(m.raw, &got) || !errors.As(m.want, &want) || got.Op != want.Op || got.Net != want.Net ||
			!errors.Is(m.raw, net.ErrClosed) || !errors.Is(m.want, net.ErrClosed) {
			t.Errorf("%s after Close: %v; the TCP connection's own: %v", m.name, m.raw, m.want)
		}
	}
}

// TestConnControlDoesNotAllocate: the options a relay sets on every
// connection, its half-close and SyscallConn (which the relay's reader and
// deliverer ask for) allocate nothing; SyscallConn gives the connection's
// own raw connection.
func TestConnControlDoesNotAllocate(t *testing.T) {
	c, s := pair(t)
	if allocs := testing.AllocsPerRun(100, func() {
		if err := c.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLinger(-1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SyscallConn(); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("SetLinger twice and SyscallConn allocate %.1f times, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(1, func() {
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("CloseWrite allocates %.1f times, want 0", allocs)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("the other end read %q, %v after CloseWrite; want a clean end", b, err)
	}
	rc, _ := c.SyscallConn()
	again, _ := c.SyscallConn()
	if rc != again {
		t.Error("SyscallConn gave two raw connections")
	}
}
