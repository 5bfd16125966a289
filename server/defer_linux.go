package server

import (
	"fmt"
	"net"
	"syscall"
)

// deferAccept sets TCP_DEFER_ACCEPT on ln: the kernel queues a connection
// for accept only once data arrived on it, or after about secs seconds
// (it then accepts it on the client's next acknowledgement). Listeners
// that are not sockets are left alone.
func deferAccept(ln net.Listener, secs int) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("defer accept on %s: %w", ln.Addr(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return fmt.Errorf("defer accept on %s: %w", ln.Addr(), err)
	}
	if serr != nil {
		return fmt.Errorf("defer accept on %s: setsockopt TCP_DEFER_ACCEPT: %w", ln.Addr(), serr)
	}
	return nil
}
