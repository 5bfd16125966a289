package relay

import (
	"context"
	"net"
	"time"
)

// The plaintext connections a relay carries are armed to close with a reset
// from the moment they exist (see ArmReset). Listen and Dial make them so
// with as few system calls as the platform allows, and give them TCP
// keep-alive with the net package's timing, so an application or target
// whose machine vanished is noticed without traffic: a first probe after
// keepAliveIdle of silence, then one every keepAliveInterval, keepAliveCount
// in all (about two and a half minutes).
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// ArmAccepted returns ln with an Accept that arms each connection
// (ArmReset) before returning it: for listeners made elsewhere than Listen.
func ArmAccepted(ln net.Listener) net.Listener { return armedListener{ln} }

type armedListener struct{ net.Listener }

func (l armedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		ArmReset(c)
	}
	return c, err
}

// ArmDialed returns dial with every connection it makes armed (ArmReset):
// for dial functions other than Dial.
func ArmDialed(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			ArmReset(c)
		}
		return c, err
	}
}
