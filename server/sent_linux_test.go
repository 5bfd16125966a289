package server

import (
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// waitDelivered waits until the peer's kernel has acknowledged everything
// written on c (its send queue holds no unacknowledged byte): what was
// written is then in the peer's socket. A write on loopback returns before
// the peer's kernel has taken the data when the machine is busy (the
// delivery is deferred to a kernel thread).
func waitDelivered(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var queued int
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			var n int32
			// SIOCOUTQ, the same request as TIOCOUTQ on Linux.
			if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n))); e != 0 {
				ierr = e
			}
			queued = int(n)
		}); err != nil || ierr != nil {
			t.Fatalf("unacknowledged bytes of %s: %v %v", c.LocalAddr(), err, ierr)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes written on %s not acknowledged within 10s", queued, c.LocalAddr())
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}
