package yamux

import (
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Postern: what an idle session costs. A hub holds thousands of sessions
// that carry nothing but keepalives, so this file keeps their cost down:
// the accept backlog is a queue that grows with use instead of a channel
// of AcceptBacklog slots allocated up front, and the keepalive is a timer
// instead of a goroutine per session, that pings only when nothing was
// received for KeepAliveInterval (any frame from the peer, its own pings
// included, shows it is alive) when KeepAliveOnlyWhenSilent is set. The
// wire protocol is unchanged.

// acceptQueue holds the streams the peer opened that wait for Accept, at
// most max of them. Any number of goroutines may push and pop.
type acceptQueue struct {
	mu      sync.Mutex
	q       []*Stream
	max     int
	ready   chan struct{}        // holds a token while q may be non-empty
	handler func(*Stream, error) // set by Serve: streams go to it, not to q
}

func newAcceptQueue(max int) *acceptQueue {
	return &acceptQueue{max: max, ready: make(chan struct{}, 1)}
}

// push queues st; it reports false when the backlog is full. With a
// handler set (Serve), it queues nothing and returns the handler.
func (a *acceptQueue) push(st *Stream) (handler func(*Stream, error), ok bool) {
	a.mu.Lock()
	if a.handler != nil {
		a.mu.Unlock()
		return a.handler, true
	}
	if len(a.q) >= a.max {
		a.mu.Unlock()
		return nil, false
	}
	a.q = append(a.q, st)
	a.mu.Unlock()
	a.signal()
	return nil, true
}

// pop takes the oldest queued stream, or returns nil.
func (a *acceptQueue) pop() *Stream {
	a.mu.Lock()
	if len(a.q) == 0 {
		a.mu.Unlock()
		return nil
	}
	st := a.q[0]
	a.q[0] = nil
	a.q = a.q[1:]
	more := len(a.q) > 0
	if !more {
		a.q = nil // an idle session holds no backlog
	}
	a.mu.Unlock()
	if more {
		a.signal() // another waiting Accept takes the next one
	}
	return st
}

func (a *acceptQueue) signal() {
	select {
	case a.ready <- struct{}{}:
	default:
	}
}

// next waits for a queued stream until done is closed (nil, false) or
// cancel is (nil, false).
func (a *acceptQueue) next(done, cancel <-chan struct{}) (*Stream, bool) {
	for {
		if st := a.pop(); st != nil {
			return st, true
		}
		select {
		case <-a.ready:
		case <-done:
			return nil, false
		case <-cancel:
			return nil, false
		}
	}
}

// accepted takes a stream the peer opened: to the Serve handler, or into
// the backlog for Accept. It reports false when the backlog is full.
func (s *Session) accepted(st *Stream) bool {
	h, ok := s.accepts.push(st)
	if h != nil {
		s.goHandOver(st, h)
	}
	return ok
}

// handOver accepts st for handle, as AcceptStream would.
func (s *Session) handOver(st *Stream, handle func(*Stream, error)) {
	if err := st.updateWindow(updateAck); err != nil {
		handle(nil, err)
		return
	}
	handle(st, nil)
}

// Serve hands every stream the peer opens, from now on and those waiting
// for Accept, to handle on a goroutine of its own, so no goroutine waits
// in Accept while the session is idle. A stream that cannot be accepted
// (its ACK cannot be queued) reaches handle as an error, and the session
// is then no longer usable. Accept must not be used after Serve.
func (s *Session) Serve(handle func(*Stream, error)) {
	a := s.accepts
	a.mu.Lock()
	a.handler = handle
	waiting := a.q
	a.q = nil
	a.mu.Unlock()
	for _, st := range waiting {
		s.goHandOver(st, handle)
	}
}

// goHandOver runs handOver on a goroutine of the config's Go, or of its own.
func (s *Session) goHandOver(st *Stream, handle func(*Stream, error)) {
	if s.config.Go == nil {
		go s.handOver(st, handle)
		return
	}
	s.config.Go(func() { s.handOver(st, handle) })
}

// OnClose runs f on a goroutine of its own once the session has closed
// (at once if it has already).
func (s *Session) OnClose(f func()) {
	s.closeHooksMu.Lock()
	if !s.closeHooksRun {
		s.closeHooks = append(s.closeHooks, f)
		s.closeHooksMu.Unlock()
		return
	}
	s.closeHooksMu.Unlock()
	go f()
}

// runCloseHooks starts the OnClose functions; Close calls it once.
func (s *Session) runCloseHooks() {
	s.closeHooksMu.Lock()
	hooks := s.closeHooks
	s.closeHooks, s.closeHooksRun = nil, true
	s.closeHooksMu.Unlock()
	for _, f := range hooks {
		go f()
	}
}

// recvClock passes reads through and notes when the last one returned
// bytes: the keepalive pings only a peer that has been silent.
type recvClock struct {
	r    io.Reader
	last atomic.Int64 // monotonic nanoseconds since keepaliveEpoch
}

var keepaliveEpoch = time.Now()

func (c *recvClock) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.last.Store(int64(time.Since(keepaliveEpoch)))
	}
	return n, err
}

// silence is how long ago the peer last sent anything.
func (c *recvClock) silence() time.Duration {
	return time.Since(keepaliveEpoch) - time.Duration(c.last.Load())
}

// keepaliveTimer is a session's keepalive: one timer, no goroutine while
// it waits. Its function runs on a goroutine of its own each time it
// fires, one at a time (each run arms the next).
type keepaliveTimer struct {
	timer *time.Timer

	mu       sync.Mutex
	pending  chan struct{} // the unanswered ping's channel, or nil
	id       uint32        // its id
	deadline time.Time     // when it counts as unanswered
	silence  time.Duration // KeepAliveOnlyWhenSilent: how long a silent peer may be before a ping
}

// startKeepalive arms the keepalive. The first ping goes out between half
// an interval and an interval after the start, so sessions that came up
// together (a reconnect storm) do not ping together ever after.
func (s *Session) startKeepalive() {
	interval := s.config.KeepAliveInterval
	first := interval/2 + rand.N(interval/2+1)
	s.recvClock.last.Store(int64(time.Since(keepaliveEpoch)))
	s.ka.mu.Lock() // a short first interval may fire before the timer is stored
	defer s.ka.mu.Unlock()
	// Two sides that both wait for silence would ping at the same moment
	// once their timers fell into step, each hearing the other too late:
	// the server side waits a quarter interval more, so the client pings
	// and the server (a hub with thousands of them) only answers.
	s.ka.silence = interval
	if atomic.LoadUint32(&s.nextStreamID)%2 == 0 { // the server side
		s.ka.silence += interval / 4
	}
	if s.IsClosed() {
		return // the receive loop ended the session already; Close found no timer
	}
	s.ka.timer = time.AfterFunc(first, s.keepaliveFire)
}

// stopKeepalive ends the keepalive when the session closes.
func (s *Session) stopKeepalive() {
	if s.ka != nil {
		s.ka.mu.Lock()
		if s.ka.timer != nil {
			s.ka.timer.Stop()
		}
		s.ka.mu.Unlock()
	}
}

// keepaliveFire checks the ping in flight and, when the peer was silent
// for an interval, sends the next one; a ping unanswered within
// KeepAliveTimeout (or ConnectionWriteTimeout) ends the session.
func (s *Session) keepaliveFire() {
	if s.IsClosed() {
		return
	}
	ka := s.ka
	ka.mu.Lock()
	defer ka.mu.Unlock()
	interval := s.config.KeepAliveInterval
	look := interval/4 + time.Millisecond // how soon to look again for a ping's answer
	if ka.pending != nil {
		select {
		case <-ka.pending:
			ka.pending = nil
			if !s.config.KeepAliveOnlyWhenSilent {
				// Upstream: the next ping an interval after the answer
				// (here: after it was seen, at most a quarter later).
				ka.timer.Reset(interval)
				return
			}
		default:
			if left := time.Until(ka.deadline); left > 0 {
				ka.timer.Reset(shorter(left, look))
				return
			}
			s.pingLock.Lock()
			delete(s.pings, ka.id)
			s.pingLock.Unlock()
			s.logger.Printf("[ERR] yamux: keepalive failed: %v", ErrTimeout)
			go s.exitErr(ErrKeepAliveTimeout)
			return
		}
	}
	if s.config.KeepAliveOnlyWhenSilent {
		if quiet := s.recvClock.silence(); quiet < ka.silence {
			ka.timer.Reset(ka.silence - quiet)
			return
		}
	}
	ch := make(chan struct{})
	s.pingLock.Lock()
	id := s.pingID
	s.pingID++
	s.pings[id] = ch
	s.pingLock.Unlock()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typePing, flagSYN, 0, id)
	if err := s.sendControl(hdr); err != nil {
		if err != ErrSessionShutdown {
			s.logger.Printf("[ERR] yamux: keepalive failed: %v", err)
			go s.exitErr(ErrKeepAliveTimeout)
		}
		return
	}
	timeout := s.config.ConnectionWriteTimeout
	if s.config.KeepAliveTimeout > 0 {
		timeout = s.config.KeepAliveTimeout
	}
	ka.pending, ka.id, ka.deadline = ch, id, time.Now().Add(timeout)
	// Look again after a quarter interval (or the timeout): for the answer,
	// and then for the next ping.
	ka.timer.Reset(shorter(timeout, look))
}

// answerPing answers the peer's ping. Postern: on a session with no
// streams (an idle partner tunnel: nothing else to write in either
// direction, so a 12-byte write cannot block behind data) the answer is
// written here on the receive goroutine, when nothing is queued and the
// write lock is free, so no other goroutine wakes for it. Otherwise it is
// queued for the send loop ahead of stream data (counted as queued, as
// sendControl counts), and only when the control queue is full does a
// goroutine of its own wait for room. An error from the direct write ends
// the receive loop, which ends the session.
func (s *Session) answerPing(pingID uint32) error {
	s.keepaliveHeard()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typePing, flagACK, 0, pingID)
	if ok, err := s.answerDirect(hdr); ok {
		return err
	}
	s.direct.queued.Add(1)
	select {
	case s.controlCh <- hdr:
		return nil
	default:
	}
	s.direct.queued.Add(-1) // sendControl counts it again
	go func() {
		if err := s.sendControl(hdr); err != nil {
			s.logger.Printf("[WARN] yamux: failed to send ping reply: %v", err)
		}
	}()
	return nil
}

// keepaliveHeard runs when the peer pinged (KeepAliveOnlyWhenSilent): the
// peer is alive, so this side's keepalive, waiting for an interval of
// silence, moves its next look to a whole silence from now. Between a
// partner that pings every interval and a hub that waits a quarter
// interval longer, the hub's timer then never fires while the partner
// lives: no goroutine per interval per tunnel just to find the peer was
// heard. A keepalive busy (its lock held) or waiting for its own ping's
// answer is left alone.
func (s *Session) keepaliveHeard() {
	ka := s.ka
	if ka == nil || !s.config.KeepAliveOnlyWhenSilent || !ka.mu.TryLock() {
		return
	}
	if ka.timer != nil && ka.pending == nil {
		ka.timer.Reset(ka.silence)
	}
	ka.mu.Unlock()
}

// answerDirect writes hdr on the caller's goroutine (the receive loop)
// if the session has no stream, DirectWrite is on, nothing is queued and
// the write lock is free; ok is false when the caller must queue it. A
// write that takes longer than ConnectionWriteTimeout ends the session
// (writeStuck), which closes the connection and so unblocks it.
func (s *Session) answerDirect(hdr header) (ok bool, err error) {
	d := &s.direct
	if !s.config.DirectWrite || d.queued.Load() != 0 || s.NumStreams() != 0 || !d.mu.TryLock() {
		return false, nil
	}
	if d.queued.Load() != 0 {
		if err := s.unlockDirect(nil); err != nil {
			return true, err
		}
		return false, nil
	}
	err = s.writeLeft()
	if err == nil {
		err = s.writeTimed(hdr, nil)
	}
	err = s.unlockDirect(err)
	if err != nil && d.timedOut.Load() {
		err = ErrConnectionWriteTimeout
	}
	return true, err
}

func shorter(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
