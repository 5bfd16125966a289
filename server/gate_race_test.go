//go:build unix

package server

import (
	"net"
	"syscall"
	"testing"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestGatePeekRacesFirstRead: when the handshake's first read takes the
// whole hello out of the socket just before the gate looks into it, the
// gate finds the socket empty; it must not take the connection for silent
// (the read began, and brings the hello), and evicts nothing for a new
// connection. A storm of partners whose hellos all waited in their sockets
// lost one now and then to this (TestStormPastMaxHandshakes).
func TestGatePeekRacesFirstRead(t *testing.T) {
	ln := testnet.Listen(t)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	hello := make([]byte, 5+600)
	hello[0], hello[1], hello[2], hello[3], hello[4] = 0x16, 0x03, 0x01, 600>>8, 600&0xff
	if _, err := client.Write(hello); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, client)

	g := newGate(1, 0)
	p, _ := g.admit(server)
	if p == nil {
		t.Fatal("the first connection was refused")
	}
	// The handshake's goroutine starts its first read (readFirst: the
	// state first, then the read) between the gate's look at the state and
	// its look into the socket.
	g.beforePeek = func(p *pending) {
		g.beforePeek = nil
		p.reading.Store(readBusy)
		rc, err := server.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var n int
		rc.Control(func(fd uintptr) { n, _ = syscall.Read(int(fd), buf) })
		if n != len(hello) {
			t.Fatalf("the first read took %d bytes, want the whole hello (%d)", n, len(hello))
		}
	}
	newcomer := from("192.0.2.7")
	if q, cause := g.admit(newcomer); q != nil || cause != CauseBusy {
		t.Fatalf("admit beside a connection whose hello is being read: admitted %v, cause %q; want not admitted, %q (nothing silent to evict)", q != nil, cause, CauseBusy)
	}
	if g.release(p) {
		t.Fatal("the connection whose hello was being read was evicted as silent")
	}
}
