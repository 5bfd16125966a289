package server

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
)

// fakeConn is a connection from addr that records its Close.
type fakeConn struct {
	net.Conn
	addr   net.Addr
	closed atomic.Bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.addr }
func (c *fakeConn) Close() error         { c.closed.Store(true); return nil }

func from(ip string) *fakeConn {
	return &fakeConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

func TestGatePerSource(t *testing.T) {
	g := newGate(100, 3)
	var conns []*fakeConn
	var ps []*pending
	for range 5 {
		c := from("192.0.2.1")
		p, cause := g.admit(c)
		if p == nil {
			t.Fatalf("silent connection refused (%s); the oldest silent one should make room", cause)
		}
		conns, ps = append(conns, c), append(ps, p)
	}
	for i, c := range conns {
		if want := i < 2; c.closed.Load() != want {
			t.Errorf("connection %d closed = %v, want %v (the oldest silent ones make room)", i, c.closed.Load(), want)
		}
	}
	if total, n, _ := g.counts(netip.MustParsePrefix("192.0.2.1/32")); total != 3 || n != 3 {
		t.Fatalf("in progress: %d in all, %d from the source; want 3, 3", total, n)
	}
	if !g.release(ps[0]) || g.release(ps[4]) {
		t.Error("release does not report which connections were evicted")
	}
	// Past their ClientHello, connections are not evicted: a fourth is dropped.
	g.hello(ps[2])
	g.hello(ps[3])
	p, _ := g.admit(from("192.0.2.1"))
	if p == nil {
		t.Fatal("the freed slot was not reused")
	}
	g.hello(p)
	c := from("192.0.2.1")
	if p, cause := g.admit(c); p != nil || cause != CauseSourceBusy {
		t.Fatalf("admit with every slot past its hello: %v, %q; want nil, %q", p, cause, CauseSourceBusy)
	}
	// Another address is not affected.
	if p, _ := g.admit(from("192.0.2.2")); p == nil {
		t.Fatal("another address was refused")
	}
}

func TestGateTotal(t *testing.T) {
	g := newGate(4, 0)
	var ps []*pending
	for i := range 4 {
		p, _ := g.admit(from(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()))
		ps = append(ps, p)
	}
	for _, p := range ps[:3] {
		g.hello(p)
	}
	victim := ps[3].conn.(*fakeConn)
	p, _ := g.admit(from("203.0.113.9"))
	if p == nil {
		t.Fatal("a new connection was refused while a silent one could make room")
	}
	g.hello(p)
	if !victim.closed.Load() {
		t.Fatal("the silent connection was not closed")
	}
	if p, cause := g.admit(from("203.0.113.10")); p != nil || cause != CauseBusy {
		t.Fatalf("admit with every slot past its hello: %v, %q; want nil, %q", p, cause, CauseBusy)
	}
	for _, p := range ps {
		g.release(p)
		g.release(p) // twice: no effect
	}
	if total, _, sources := g.counts(netip.Prefix{}); total != 1 || sources != 1 {
		t.Fatalf("after release: %d in progress from %d sources, want 1 from 1", total, sources)
	}
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
	} {
		got := sourceString(sourceOf(&net.TCPAddr{IP: net.ParseIP(tc.addr), Port: 1}))
		if got != tc.want {
			t.Errorf("source of %s: %s, want %s", tc.addr, got, tc.want)
		}
	}
	if got := sourceString(sourceOf(&net.UnixAddr{Name: "@x", Net: "unix"})); got != "unknown" {
		t.Errorf("source of a unix address: %s, want unknown", got)
	}
}
