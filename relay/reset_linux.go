package relay

import (
	"net"
	"sync/atomic"
	"syscall"

	"github.com/postern-tunnel/postern/internal/rawio"
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
//
// shut is read after the state: it is set before this side's FIN, so a
// CLOSE that our own FIN led to finds it set. Read before the state, a FIN
// sent in between (the other direction's half-close) would leave a clean
// end in both directions looking like a reset.
func endedByReset(c net.Conn, shut *atomic.Bool) bool {
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
		if testHookBeforeState != nil {
			testHookBeforeState()
		}
		state, err := rawio.TCPState(fd)
		reset = err == nil && state == tcpClose && !shut.Load()
	}); err != nil {
		return true // closed by the relay: an abort is under way
	}
	return reset
}

// testHookBeforeState, when set by a test, runs just before endedByReset
// reads the socket's state.
var testHookBeforeState func()

// tcpClose is Linux's TCP_CLOSE state (include/net/tcp_states.h).
const tcpClose = 7
