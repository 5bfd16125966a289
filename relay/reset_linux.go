package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// endedByReset reports whether c, whose Read just returned io.EOF, was in
// fact reset by its peer. Linux reports a reset (ECONNRESET) to one system
// call only: when a concurrent write took it, the read that follows sees a
// plain end of file. The socket's state tells them apart while this side
// has not sent its own FIN (shut is false): a FIN leaves it in CLOSE_WAIT,
// a reset in CLOSE. After our FIN, CLOSE is also the normal end (LAST_ACK,
// then the last ACK); no write of ours is then under way to take a reset,
// so the read's EOF is taken at its word. A connection already closed here
// (the relay's other direction reset it) did not end cleanly either.
func endedByReset(c net.Conn, shut bool) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	reset := false
	if err := rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		reset = err == nil && info.State == tcpClose && !shut
	}); err != nil {
		return true // closed by the relay: an abort is under way
	}
	return reset
}

// tcpClose is Linux's TCP_CLOSE state (include/net/tcp_states.h).
const tcpClose = 7
