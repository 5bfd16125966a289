package testnet

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// RebindHost returns a loopback address of the test's own, for a server
// that the test stops and starts again on the same port. A port first
// handed out as an ephemeral one on 127.0.0.1 is only free until any
// connection on the machine takes it as its source port, and that socket
// then keeps the server from binding it again ("address already in use").
// Linux answers on all of 127.0.0.0/8, and a connection to a loopback
// address goes out from 127.0.0.1, so a port on another loopback address
// stays free for the server's return.
func RebindHost(t testing.TB) string {
	t.Helper()
	a := [4]byte{127, byte(rand.IntN(256)), byte(rand.IntN(256)), byte(2 + rand.IntN(252))}
	return netip.AddrFrom4(a).String()
}

// HoldSourcePort makes a connection from 127.0.0.1:port, held until the
// test ends: what any connection that happens to take the port as its
// source port does to a server that wants it back.
func HoldSourcePort(t testing.TB, port int) {
	t.Helper()
	ln := Listen(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if errors.Is(err, syscall.EADDRINUSE) {
		return // another socket holds it already
	}
	if err != nil {
		t.Fatalf("dial from 127.0.0.1:%d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
}
