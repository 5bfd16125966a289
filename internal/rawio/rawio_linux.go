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
