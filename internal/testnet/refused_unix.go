//go:build unix

package testnet

import (
	"net"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback TCP address where connections are
// refused, for as long as the test runs: a socket is bound to it but never
// listens, and it is bound without SO_REUSEADDR, so no other socket can
// take the port meanwhile. A port freed by closing a listener is not that:
// another process can bind it in between.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:0: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	in, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("getsockname: %T, want an IPv4 address", sa)
	}
	return (&net.TCPAddr{IP: net.IP(in.Addr[:]), Port: in.Port}).String()
}
