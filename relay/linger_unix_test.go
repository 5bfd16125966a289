//go:build unix

package relay

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// lingerOf reads c's SO_LINGER.
func lingerOf(t *testing.T, c *net.TCPConn) unix.Linger {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var l *unix.Linger
	var gerr error
	rc.Control(func(fd uintptr) { l, gerr = unix.GetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return *l
}

// TestRelayArmsReset: while a relay runs, its plaintext connection closes
// with a reset (linger 0), so the kernel's close of a crashed agent's
// sockets cannot pass for a clean end.
func TestRelayArmsReset(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.left.start(context.Background(), nil)
		l.right.start(context.Background(), nil)
		l.left.app.Write([]byte("ping"))
		readFull(t, l.right.app, []byte("ping"))
		for _, s := range []*side{l.left, l.right} {
			if got := lingerOf(t, s.plain); got.Onoff != 1 || got.Linger != 0 {
				t.Errorf("plaintext connection's SO_LINGER during the relay: %+v, want on, 0s", got)
			}
		}
		waitErr(t, writeAndClose(l.left.app, nil))
		waitErr(t, writeAndClose(l.right.app, nil))
		if got, err := readAll(l.left.app); err != nil || len(got) != 0 {
			t.Fatalf("left application: %q, %v; want a clean end", got, err)
		}
		if got, err := readAll(l.right.app); err != nil || len(got) != 0 {
			t.Fatalf("right application: %q, %v; want a clean end", got, err)
		}
		for _, s := range []*side{l.left, l.right} {
			if r := s.wait(t); r.err != nil {
				t.Fatalf("Relay: %v", r.err)
			}
		}
	})
}
