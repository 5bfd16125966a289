package server

import (
	"container/list"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// gate bounds the connections that have not finished their TLS handshake:
// at most max in all and at most perSource from one source (an IPv4
// address, or an IPv6 /64, which one host usually holds whole). When a
// bound is reached, the oldest connection that has not yet sent its
// ClientHello makes room for the new one: a partner sends its hello at
// once, so silent connections, however many, cannot keep it out. A
// connection whose whole ClientHello already waits in its socket, unread
// because its handshake's goroutine has not run yet (a hub busy with a
// reconnect storm), is not silent and is not evicted. When every
// connection in progress has sent its hello, admitWaiting holds the
// server's dispatch until one finishes, so new connections wait in its
// queue (and past it, in the listen backlog) instead of being dropped and
// dialed again; the per-source bound still drops (one source must not
// hold up the others). With
// Server.DeferAccept (Linux), connections reach the gate only once their
// first bytes arrived, or a second after they were opened without any, so
// the silent ones are mostly those.
//
// A gate is safe for concurrent use; every method takes its lock briefly
// and only admitWaiting blocks.
type gate struct {
	max       int
	perSource int // 0: no bound per source

	mu      sync.Mutex
	total   int
	sources map[netip.Prefix]*sourceSlots
	silent  list.List     // of *pending that have sent no ClientHello, oldest first
	room    chan struct{} // signalled (without blocking) by wake

	beforePeek func(*pending) // for tests: runs before the gate looks into a socket
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
	// reading is where the handshake's first read is (readNone, readBusy,
	// readDone), set by its goroutine: once it has read, the socket no
	// longer holds the whole hello, so the gate does not look into it
	// (helloConn reports the hello instead).
	reading atomic.Int32
}

// The first read of a connection's handshake, as the gate sees it.
const (
	readNone int32 = iota // not read: the hello, if sent, is in the socket
	readBusy              // reading from the socket right now
	readDone              // read: helloConn reports the hello once whole
)

func newGate(max, perSource int) *gate {
	return &gate{max: max, perSource: perSource, sources: map[netip.Prefix]*sourceSlots{},
		room: make(chan struct{}, 1)}
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
		v := g.silentLocked(&s.silent)
		if v == nil {
			g.dropEmpty(src, s)
			return nil, CauseSourceBusy
		}
		victims = append(victims, g.evictLocked(v))
	}
	if g.total >= g.max {
		v := g.silentLocked(&g.silent)
		if v == nil {
			g.dropEmpty(src, s)
			return nil, CauseBusy
		}
		victims = append(victims, g.evictLocked(v))
	}
	g.sources[src] = s
	p := &pending{conn: conn, source: src}
	p.inGate = g.silent.PushBack(p)
	p.inSource = s.silent.PushBack(p)
	s.n++
	g.total++
	return p, ""
}

// silentLocked returns the oldest connection of l (a silent list) that
// is really silent. One whose whole ClientHello waits unread in its
// socket is taken off the silent lists on the way, as if its hello had
// arrived; one whose handshake is reading from its socket at this moment,
// or began to while the gate looked, is passed over (the read either
// brings its hello or finds nothing and waits again).
func (g *gate) silentLocked(l *list.List) *pending {
	for e := l.Front(); e != nil; {
		p := e.Value.(*pending)
		e = e.Next()
		switch p.reading.Load() {
		case readNone:
			if g.beforePeek != nil {
				g.beforePeek(p)
			}
			if helloWaiting(p.conn) {
				g.unlistLocked(p)
				continue
			}
			if p.reading.Load() != readNone {
				// The handshake's first read began while the gate
				// looked, and may have taken the hello out of the socket
				// just before the look: pass it over as while reading.
				continue
			}
			return p
		case readBusy:
		default:
			return p
		}
	}
	return nil
}

// admitWaiting admits conn as admit does, except that when the total
// bound stands in the way (every connection in progress has sent its
// hello) it waits for a slot to free, holding the server's dispatch, so
// new connections wait in its queue instead of being dropped and dialed
// again. Each handshake in progress ends within
// handshake_timeout, so the wait is bounded. It returns nil and
// CauseBusy when ctx is done first.
//
// A silent connection is still evicted at once: making it wait for a
// little silence first (50 ms was tried) lets a renewed flood of silent
// connections fill the listen backlog, and a partner's connection then
// waited seconds for the kernel to take it.
func (g *gate) admitWaiting(ctx context.Context, conn net.Conn) (*pending, Cause) {
	for {
		p, cause := g.admit(conn)
		if p != nil || cause != CauseBusy {
			return p, cause
		}
		select {
		case <-g.room:
		case <-ctx.Done():
			return nil, CauseBusy
		}
	}
}

// wake tells admitWaiting to look again: a slot freed, or a connection
// it passed over while reading has read.
func (g *gate) wake() {
	select {
	case g.room <- struct{}{}:
	default:
	}
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
	g.wake()
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
