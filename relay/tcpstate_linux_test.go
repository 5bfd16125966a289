package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpClosed reports whether c's TCP state is CLOSE: a reset from the peer
// has arrived (after the peer's FIN alone the state stays CLOSE_WAIT until
// this end closes). It reads TCP_INFO, which leaves the socket's pending
// error to the read or write that reports it.
func tcpClosed(c *net.TCPConn) (closed, known bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	var info *unix.TCPInfo
	if err := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || info == nil {
		return false, false
	}
	return info.State == unix.BPF_TCP_CLOSE, true
}
