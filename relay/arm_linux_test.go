package relay

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenAndDialKeepAlive: connections from Listen (inherited from the
// listening socket) and Dial carry TCP keep-alive with the net package's
// timing, which they no longer get from the net package.
func TestListenAndDialKeepAlive(t *testing.T) {
	var d net.Dialer
	accepted, _ := armedPair(t, Listen, d.DialContext)
	_, dialed := armedPair(t, net.Listen, Dial)
	for name, c := range map[string]net.Conn{"accepted": accepted, "dialed": dialed} {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			level, opt, want int
			name             string
		}{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle.Seconds()), "TCP_KEEPIDLE"},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval.Seconds()), "TCP_KEEPINTVL"},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount, "TCP_KEEPCNT"},
			{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"},
		} {
			var got int
			var gerr error
			rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) })
			if gerr != nil || got != o.want {
				t.Errorf("%s connection's %s: %d, %v; want %d", name, o.name, got, gerr, o.want)
			}
		}
	}
	if keepAliveIdle.Seconds() != 15 || keepAliveInterval.Seconds() != 15 || keepAliveCount != 9 {
		t.Errorf("keep-alive %v, %v, %d; want the net package's defaults (15s, 15s, 9)", keepAliveIdle, keepAliveInterval, keepAliveCount)
	}
}
