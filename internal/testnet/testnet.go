// Package testnet holds the helpers that tests in several packages share
// for running things on loopback: a listener and a service that last until
// the test ends, an echo handler, a dialer, and a log buffer a test can
// wait on for a line.
package testnet

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Listen opens a listener on 127.0.0.1 at an ephemeral port, closed when
// the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Serve runs handle in a goroutine of its own for each connection ln
// accepts, and closes the connection when handle returns. When the test
// ends it closes ln and waits for the accept loop and every handle to
// return, so no goroutine outlives the test.
func Serve(t testing.TB, ln net.Listener, handle func(c *net.TCPConn)) {
	ServeConns(t, ln, handle)
}

// ServeConns is Serve for any kind of connection ln accepts (a Unix
// socket's *net.UnixConn, say).
func ServeConns[C net.Conn](t testing.TB, ln net.Listener, handle func(c C)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(C))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// Echo is a handler for Serve: it answers with what it reads, then
// half-closes when the client does.
func Echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// Dial connects to addr within 5s; the connection is closed when the test
// ends.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// Drain reads c until an error and returns it: io.EOF for a clean end.
func Drain(c net.Conn) error {
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return io.EOF
	}
	return err
}

// WriteDrain writes p to c, then reads c until an error, and returns the
// first error either returned: io.EOF for a clean end. A test that writes
// and then asserts how the connection ended needs the write's error too:
// the kernel reports a reset (RST) to one call only (the socket's pending
// error is cleared when a call returns it), so when the reset arrives
// before the write (a refusal can be that quick), the write returns
// ECONNRESET and a read after it only end-of-stream.
func WriteDrain(c net.Conn, p []byte) error {
	if len(p) > 0 { // an empty write is no call at all on some connections
		if _, err := c.Write(p); err != nil {
			return err
		}
	}
	return Drain(c)
}

// DialWriteDrain dials addr, writes p (if any) and reads to the end, all
// within timeout, and returns the first error of the three: io.EOF for a
// clean end. For a connection the test expects to be refused with a reset: the
// reset can be quick enough to reach the dial itself (the connect's
// pending-error check takes it), or the write.
func DialWriteDrain(t testing.TB, addr string, p []byte, timeout time.Duration) error {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	return WriteDrain(c, p)
}
