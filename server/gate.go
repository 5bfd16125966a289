package server

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
)

// gate bounds the connections that have not finished their TLS handshake:
// at most max in all and at most perSource from one source (an IPv4
// address, or an IPv6 /64, which one host usually holds whole). When a
// bound is reached, the oldest connection that has not yet sent its
// ClientHello makes room for the new one: a partner sends its hello at
// once, so silent connections, however many, cannot keep it out. Only
// when every connection in progress has sent its hello is the new one
// dropped.
//
// A gate is safe for concurrent use; every method takes its lock briefly
// and none of them blocks.
type gate struct {
	max       int
	perSource int // 0: no bound per source

	mu      sync.Mutex
	total   int
	sources map[netip.Prefix]*sourceSlots
	silent  list.List // of *pending that have sent no ClientHello, oldest first
}

// sourceSlots are one source's connections in progress.
type sourceSlots struct {
	n      int
	silent list.List // of *pending, oldest first
}

// pending is one admitted connection until release.
type pending struct {
	conn   net.Conn
	source netip.Prefix
	// elements in the gate's and the source's silent lists, nil once the
	// ClientHello arrived (or the connection was evicted or released).
	inGate, inSource *list.Element
	released         bool
	evicted          bool // closed to make room; read by the handshake's goroutine after the handshake returns
}

func newGate(max, perSource int) *gate {
	return &gate{max: max, perSource: perSource, sources: map[netip.Prefix]*sourceSlots{}}
}

// admit takes a slot for conn, making room if a bound is reached by
// closing the oldest silent connection (of the same source first). It
// returns nil and the cause when conn must be dropped.
func (g *gate) admit(conn net.Conn) (*pending, Cause) {
	src := sourceOf(conn.RemoteAddr())
	var victims []net.Conn
	defer func() {
		for _, c := range victims {
			c.Close()
		}
	}()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sources[src]
	if s == nil {
		s = &sourceSlots{}
	}
	if g.perSource > 0 && s.n >= g.perSource {
		if s.silent.Len() == 0 {
			g.dropEmpty(src, s)
			return nil, CauseSourceBusy
		}
		victims = append(victims, g.evictLocked(s.silent.Front().Value.(*pending)))
	}
	if g.total >= g.max {
		if g.silent.Len() == 0 {
			g.dropEmpty(src, s)
			return nil, CauseBusy
		}
		victims = append(victims, g.evictLocked(g.silent.Front().Value.(*pending)))
	}
	g.sources[src] = s
	p := &pending{conn: conn, source: src}
	p.inGate = g.silent.PushBack(p)
	p.inSource = s.silent.PushBack(p)
	s.n++
	g.total++
	return p, ""
}

// dropEmpty forgets a source with no connections.
func (g *gate) dropEmpty(src netip.Prefix, s *sourceSlots) {
	if s.n == 0 {
		delete(g.sources, src)
	}
}

// evictLocked marks p evicted, frees its slot and returns its connection
// for the caller to close after unlocking.
func (g *gate) evictLocked(p *pending) net.Conn {
	p.evicted = true
	g.releaseLocked(p)
	return p.conn
}

// hello records that p's ClientHello arrived: p can no longer be evicted.
func (g *gate) hello(p *pending) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.unlistLocked(p)
}

// release frees p's slot (once; later calls do nothing) and reports
// whether p had been evicted to make room.
func (g *gate) release(p *pending) (evicted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked(p)
	return p.evicted
}

func (g *gate) releaseLocked(p *pending) {
	if p.released {
		return
	}
	p.released = true
	g.unlistLocked(p)
	g.total--
	if s := g.sources[p.source]; s != nil {
		s.n--
		g.dropEmpty(p.source, s)
	}
}

func (g *gate) unlistLocked(p *pending) {
	if p.inGate != nil {
		g.silent.Remove(p.inGate)
		p.inGate = nil
	}
	if p.inSource != nil {
		if s := g.sources[p.source]; s != nil {
			s.silent.Remove(p.inSource)
		}
		p.inSource = nil
	}
}

// counts reports the connections in progress, in all and from src, and
// how many sources are tracked (for tests).
func (g *gate) counts(src netip.Prefix) (total, fromSource, sources int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.sources[src]; s != nil {
		fromSource = s.n
	}
	return g.total, fromSource, len(g.sources)
}

// sourceOf is the source a connection is counted under: its IPv4 address,
// or its IPv6 address's /64. Addresses that are not IP (pipes in tests)
// share the zero prefix.
func sourceOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.WithZone("").Prefix(64)
		return p
	}
	return netip.Prefix{}
}

// sourceString prints a source as people know it: the bare IPv4 address,
// or the IPv6 /64.
func sourceString(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "unknown"
	case p.Addr().Is4():
		return p.Addr().String()
	}
	return p.String()
}
