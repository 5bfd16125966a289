//go:build unix

package relay

import (
	"context"
	"net"
	"path/filepath"
	"testing"
)

// armedPair connects dial to a listener from listen and returns the
// accepted and the dialed end.
func armedPair(t *testing.T, listen func(network, addr string) (net.Listener, error), dial func(context.Context, string, string) (net.Conn, error)) (accepted, dialed net.Conn) {
	t.Helper()
	ln, err := listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err = dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close(); dialed.Close() })
	return accepted, dialed
}

// TestListenAndDialArm: a forward's connections (Listen, or ArmAccepted
// around another listener) and a target's (Dial, or ArmDialed) are armed
// to close with a reset as soon as the agent holds them.
func TestListenAndDialArm(t *testing.T) {
	var d net.Dialer
	for _, v := range []struct {
		name   string
		listen func(network, addr string) (net.Listener, error)
		dial   func(context.Context, string, string) (net.Conn, error)
		armed  string // which end the variant arms
	}{
		{"Listen", Listen, d.DialContext, "accepted"},
		{"ArmAccepted", func(n, a string) (net.Listener, error) {
			ln, err := net.Listen(n, a)
			if err != nil {
				return nil, err
			}
			return ArmAccepted(ln), nil
		}, d.DialContext, "accepted"},
		{"Dial", net.Listen, Dial, "dialed"},
		{"ArmDialed", net.Listen, ArmDialed(d.DialContext), "dialed"},
	} {
		t.Run(v.name, func(t *testing.T) {
			accepted, dialed := armedPair(t, v.listen, v.dial)
			armed, other := accepted, dialed
			if v.armed == "dialed" {
				armed, other = dialed, accepted
			}
			if got := lingerOf(t, armed.(*net.TCPConn)); got.Onoff != 1 || got.Linger != 0 {
				t.Errorf("%s connection's SO_LINGER: %+v, want on, 0s", v.armed, got)
			}
			if got := lingerOf(t, other.(*net.TCPConn)); got.Onoff != 0 {
				t.Errorf("the other end's SO_LINGER: %+v, want off (nothing leaks to other sockets)", got)
			}
		})
	}
}

// TestListenAndDialUnixSockets: Listen and Dial take a Unix socket too,
// which has no TCP options to set.
func TestListenAndDialUnixSockets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := Listen("unix", path)
	if err != nil {
		t.Fatalf("Listen unix: %v", err)
	}
	defer ln.Close()
	c, err := Dial(context.Background(), "unix", path)
	if err != nil {
		t.Fatalf("Dial unix: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.Write([]byte("x"))
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatalf("Read over the Unix socket: %v", err)
	}
}
