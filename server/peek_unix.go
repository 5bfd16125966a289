//go:build unix

package server

import (
	"net"
	"syscall"
)

// helloWaiting reports whether conn's socket already holds a whole first
// TLS record (the client's ClientHello), unread: it peeks, without
// waiting and without consuming, at the record's 5-byte header and then
// at the whole record. Connections that are not sockets report false.
func helloWaiting(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var header [5]byte
	if peek(rc, header[:]) < len(header) {
		return false
	}
	// A record is at most 16 KiB plus some overhead; a ClientHello
	// is usually 1–2 KiB, so the buffer is small and short-lived.
	whole := len(header) + (int(header[3])<<8 | int(header[4]))
	return peek(rc, make([]byte, whole)) == whole
}

// peek reads into b what the socket holds, without consuming it or
// waiting, and returns how many bytes it got.
func peek(rc syscall.RawConn, b []byte) int {
	var n int
	err := rc.Read(func(fd uintptr) bool {
		n, _, _ = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	if err != nil || n < 0 {
		return 0
	}
	return n
}
