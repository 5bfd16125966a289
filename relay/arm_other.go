//go:build !linux

package relay

import (
	"context"
	"net"
)

// Listen binds a listener for the application's side of a forward: each
// connection it accepts is armed to close with a reset. TCP keep-alive is
// the net package's, with the same timing as on Linux.
func Listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return ArmAccepted(ln), nil
}

// Dial connects to a target and arms the connection to close with a reset.
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return ArmDialed(d.DialContext)(ctx, network, addr)
}
