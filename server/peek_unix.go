//go:build unix

package server

import (
	"errors"
	"net"
	"syscall"
)

// maxHelloRecord bounds the first record looked for in a socket: a TLS
// record is at most 16 KiB plus some overhead (a ClientHello is usually
// 1–2 KiB).
const maxHelloRecord = 5 + 16<<10 + 2048

// helloWaiting reports whether conn's socket already holds a whole first
// TLS record (the client's ClientHello), unread: it peeks, without
// waiting and without consuming, at the record's 5-byte header and then
// at the whole record. Connections that are not sockets report false.
func helloWaiting(conn net.Conn) bool {
	rc := rawConn(conn)
	if rc == nil {
		return false
	}
	// Control, not Read: the handshake's goroutine may hold the read lock
	// while it waits for the socket, and a peek neither waits nor consumes.
	var whole bool
	err := rc.Control(func(fd uintptr) {
		whole, _ = peekHello(fd, nil)
	})
	return err == nil && whole
}

// peekHello peeks at the socket fd: whole when a whole handshake record
// waits in it; settled when it never will (other bytes, end of stream, an
// error), so there is no use waiting. buf, if not nil, keeps the buffer
// between calls.
func peekHello(fd uintptr, buf *[]byte) (whole, settled bool) {
	var header [5]byte
	n, err := peek(fd, header[:])
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return false, false
	case err != nil || n == 0:
		return false, true
	case n > 0 && header[0] != 0x16: // not a handshake record
		return false, true
	case n < len(header):
		return false, false
	}
	need := len(header) + (int(header[3])<<8 | int(header[4]))
	if need > maxHelloRecord {
		return false, true
	}
	var b []byte
	if buf != nil && cap(*buf) >= need {
		b = (*buf)[:need]
	} else {
		b = make([]byte, need)
		if buf != nil {
			*buf = b
		}
	}
	n, err = peek(fd, b)
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return false, false
	case err != nil:
		return false, true
	}
	return n == need, false
}

// peek copies into b what the socket holds, without consuming it or
// waiting.
func peek(fd uintptr, b []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

func rawConn(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
