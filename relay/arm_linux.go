package relay

import (
	"context"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/postern-tunnel/postern/internal/rawio"
)

// On Linux a connection accepted from a listening socket inherits the
// listener's socket options (SO_LINGER, SO_KEEPALIVE and its timing), so
// Listen sets them once on the listener and an accepted connection needs
// none of its own; Dial sets them on the new socket before it connects.
// Both with raw system calls (internal/rawio): made through the net
// package, the keep-alive alone was four setsockopt calls per connection,
// the arming one more, each a pass through the scheduler.

// Listen binds a listener for the application's side of a forward: its TCP
// connections come armed to close with a reset and with keep-alive on.
// Other networks (a Unix socket) are bound as net.Listen binds them.
func Listen(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: armSocket}
	return lc.Listen(context.Background(), network, addr)
}

// Dial connects to a target: a TCP connection is armed to close with a
// reset and has keep-alive on before it connects.
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: -1, Control: armSocket}
	return d.DialContext(ctx, network, addr)
}

// armSocket is the Control of Listen and Dial.
func armSocket(network, _ string, c syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var err error
	if cerr := c.Control(func(fd uintptr) { err = armFD(fd) }); cerr != nil {
		return cerr
	}
	return err
}

func armFD(fd uintptr) error {
	for _, o := range []struct {
		level, opt, value int
		name              string
	}{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(keepAliveIdle.Seconds()), "TCP_KEEPIDLE"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(keepAliveInterval.Seconds()), "TCP_KEEPINTVL"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount, "TCP_KEEPCNT"},
	} {
		if err := rawio.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	if err := rawio.SetLinger(fd, 0); err != nil {
		return os.NewSyscallError("setsockopt SO_LINGER", err)
	}
	return nil
}
