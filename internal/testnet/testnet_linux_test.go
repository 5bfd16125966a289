package testnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitState waits until c's TCP state (TCP_INFO) is state: the peer's
// RST or FIN has arrived, and no call has taken the error it left.
func waitState(t *testing.T, c *net.TCPConn, state uint8) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got uint8
		var gerr error
		raw.Control(func(fd uintptr) {
			var info *unix.TCPInfo
			info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if info != nil {
				got = info.State
			}
		})
		if gerr != nil {
			t.Fatal(gerr)
		}
		if got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TCP state %d after 10s, want %d", got, state)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// closingPeer dials a listener whose handler closes the connection once
// the dial has returned (with a reset when reset is set: one that came
// sooner would be the dial's error), and returns the client's end once
// that close has arrived.
func closingPeer(t *testing.T, reset bool) *net.TCPConn {
	t.Helper()
	ln := Listen(t)
	dialed := make(chan struct{})
	Serve(t, ln, func(c *net.TCPConn) {
		<-dialed
		if reset {
			c.SetLinger(0)
		}
	})
	c := Dial(t, ln.Addr().String())
	close(dialed)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if reset {
		waitState(t, c, unix.BPF_TCP_CLOSE)
	} else {
		waitState(t, c, unix.BPF_TCP_CLOSE_WAIT)
	}
	return c
}

// TestWriteDrainResetBeforeWrite pins the kernel behaviour WriteDrain is
// for: a reset that arrived before the write is reported to the write
// only, and a read after it sees end-of-stream. WriteDrain reports the
// reset; a clean close (FIN) it reports as io.EOF, so a test using it can
// still tell the two apart.
func TestWriteDrainResetBeforeWrite(t *testing.T) {
	c := closingPeer(t, true)
	_, werr := c.Write([]byte("late"))
	if !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("write after the reset arrived: %v, want ECONNRESET", werr)
	}
	if err := Drain(c); err != io.EOF {
		t.Fatalf("read after the write took the reset: %v, want end-of-stream (the reset is reported once)", err)
	}

	if err := WriteDrain(closingPeer(t, true), []byte("late")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("WriteDrain after a reset: %v, want ECONNRESET", err)
	}
	if err := WriteDrain(closingPeer(t, false), []byte("late")); err != io.EOF {
		t.Errorf("WriteDrain after a clean close: %v, want io.EOF", err)
	}
}

// TestDialWriteDrainResetAtOnce: a listener that resets each connection as
// soon as it accepts it. The reset lands on the dial, the write or the
// read, whichever comes first; DialWriteDrain reports it every time.
func TestDialWriteDrainResetAtOnce(t *testing.T) {
	ln := Listen(t)
	Serve(t, ln, func(c *net.TCPConn) { c.SetLinger(0) })
	for i := range 20 {
		if err := DialWriteDrain(t, ln.Addr().String(), []byte("let me in"), 10*time.Second); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d: %v, want ECONNRESET", i, err)
		}
	}
}

// TestRefusedAddr: a dial to RefusedAddr is refused, and the port cannot
// be taken by a listener while the test runs.
func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	for i := range 3 {
		if c, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
			c.Close()
			t.Fatalf("dial %d to %s connected, want it refused", i, addr)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %d to %s: %v, want connection refused", i, addr, err)
		}
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("a listener took %s while it was held", addr)
	}
}

// TestRebindHost: a port on RebindHost's address can be bound again while
// a connection holds the same port number on 127.0.0.1 as its source,
// which keeps 127.0.0.1 from taking it; and a connection to RebindHost's
// address goes out from 127.0.0.1, not from an address of its own.
func TestRebindHost(t *testing.T) {
	host := RebindHost(t)
	first, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	addr := first.Addr().(*net.TCPAddr)
	c := Dial(t, addr.String())
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.1" {
		t.Fatalf("a connection to %s goes out from %s, want 127.0.0.1", addr, got)
	}
	c.Close()
	first.Close()

	HoldSourcePort(t, addr.Port)

	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(addr.Port))); err == nil {
		ln.Close()
		t.Fatalf("127.0.0.1:%d was bound again while a connection held it: the premise of RebindHost no longer holds", addr.Port)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen on 127.0.0.1:%d: %v, want address in use", addr.Port, err)
	}
	again, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	again.Close()
}
