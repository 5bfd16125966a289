//go:build linux

// Package rawio reads and writes non-blocking sockets with raw system
// calls, keeping the runtime's poller for the waits.
//
// A Go system call made through the syscall package tells the scheduler it
// may block (entersyscall), and when every P was idle that wakes the
// runtime's monitor thread, which then polls every 20 µs for a while. A
// tunnel carrying one small request at a time goes idle between every
// round trip, so each request paid for that wake-up and its polling, about
// as much CPU as the reads and writes themselves. A read or write on a
// non-blocking socket never blocks, so it needs none of that: these
// functions make it directly, and the waits for readiness stay with the
// runtime's poller (syscall.RawConn).
package rawio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether Read and Write make raw system calls here.
const Supported = true

// Read reads from the non-blocking descriptor fd into p, retrying EINTR.
// It returns syscall.EAGAIN when no data is ready.
func Read(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_READ, fd, p) }

// Write writes p to the non-blocking descriptor fd once, retrying EINTR,
// and returns what the socket took; syscall.EAGAIN when it took nothing.
func Write(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, p) }

// rawIO makes the read or write system call trap on fd and p.
func rawIO(trap, fd uintptr, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		default:
			return 0, e
		}
	}
}

// The socket options below are set the same way: the connection setup and
// clean close of every relayed connection make them, and through the
// syscall package each would hand the scheduler a chance to wake the
// monitor thread (see the package comment).

// SetsockoptInt sets the integer socket option opt at level on fd.
func SetsockoptInt(fd uintptr, level, opt, value int) error {
	v := int32(value)
	return setsockopt(fd, level, opt, unsafe.Pointer(&v), unsafe.Sizeof(v))
}

// SetLinger sets SO_LINGER on fd: sec < 0 turns lingering off (close sends
// a FIN and returns at once), sec >= 0 turns it on with that timeout; 0
// makes close a reset.
func SetLinger(fd uintptr, sec int) error {
	var l syscall.Linger
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return setsockopt(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, unsafe.Pointer(&l), unsafe.Sizeof(l))
}

func setsockopt(fd uintptr, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, fd, uintptr(level), uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Shutdown shuts down part of fd's connection (syscall.SHUT_WR: a FIN).
func Shutdown(fd uintptr, how int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, uintptr(how), 0)
	if e != 0 {
		return e
	}
	return nil
}

// TCPState returns the TCP state of fd's connection (TCP_INFO's state:
// 1 ESTABLISHED ... 7 CLOSE ...).
func TCPState(fd uintptr) (uint8, error) {
	var info unix.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return 0, e
	}
	return info.State, nil
}
