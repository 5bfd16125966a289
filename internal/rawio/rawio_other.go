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
