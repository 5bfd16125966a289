//go:build unix && !linux

package rawio

import "syscall"

// Supported reports whether Read and Write make raw system calls here.
const Supported = false

// Read is syscall.Read, retrying EINTR.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), err
		}
	}
}

// Write is syscall.Write, retrying EINTR.
func Write(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), err
		}
	}
}

// SetLinger sets SO_LINGER on fd: sec < 0 turns lingering off, sec >= 0
// turns it on with that timeout; 0 makes close a reset.
func SetLinger(fd uintptr, sec int) error {
	var l syscall.Linger
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &l)
}

// Shutdown is syscall.Shutdown.
func Shutdown(fd uintptr, how int) error { return syscall.Shutdown(int(fd), how) }
