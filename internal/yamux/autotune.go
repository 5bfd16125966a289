package yamux

import (
	"sync/atomic"
	"time"
)

// Postern: receive-window autotuning. Upstream grants every stream
// MaxStreamWindowSize at once, so a stream whose reader falls behind holds
// that much of the peer's data, and several such streams in one session
// buffer many megabytes each and copy it out of memory no cache holds. The
// window a stream needs is what the peer sends in a round trip; a large
// one only serves a long link. With StartStreamWindowSize set, a stream
// starts with that window and doubles it (up to MaxStreamWindowSize) when
// its reader consumed half of it within two round trips: the peer was
// held by the window, not by the reader, as a receiver's window is grown
// in TCP (dynamic right-sizing) and in QUIC. The round trip is the
// session's, measured by its pings, which include the queues in both
// agents and the connection's buffers that the window must also cover.
// The wire protocol is unchanged: the peer just receives larger updates.

// rttStale is how old the session's round-trip estimate may be before a
// stream that wants to grow its window asks for a fresh one.
const rttStale = 2 * time.Second

// rttClock is the session's round-trip estimate.
type rttClock struct {
	smoothed atomic.Int64 // nanoseconds; 0 until the first answer
	at       atomic.Int64 // when it was last measured (nanoseconds since keepaliveEpoch)
	probing  atomic.Bool  // a probe ping is in flight
}

// noteRTT takes one measured round trip into the estimate (weighted 1/8
// against what was measured before, as TCP smooths its own).
func (s *Session) noteRTT(d time.Duration) {
	if d <= 0 {
		d = 1
	}
	old := s.rtt.smoothed.Load()
	if old != 0 {
		d = time.Duration((7*old + int64(d)) / 8)
	}
	s.rtt.smoothed.Store(int64(d))
	s.rtt.at.Store(int64(time.Since(keepaliveEpoch)))
}

// roundTrip returns the session's round-trip estimate, 0 when there is
// none yet. An estimate missing or older than rttStale starts a ping to
// measure it (at most one at a time), whose answer later calls see.
func (s *Session) roundTrip() time.Duration {
	rtt := time.Duration(s.rtt.smoothed.Load())
	age := time.Since(keepaliveEpoch) - time.Duration(s.rtt.at.Load())
	if (rtt == 0 || age > rttStale) && s.rtt.probing.CompareAndSwap(false, true) {
		go func() {
			defer s.rtt.probing.Store(false)
			s.Ping() // notes the round trip itself
		}()
	}
	return rtt
}

// startWindow is the window an admitted stream starts with.
func (c *Config) startWindow() uint32 {
	w := c.StartStreamWindowSize
	if w == 0 || w > c.MaxStreamWindowSize {
		return c.MaxStreamWindowSize
	}
	if w < initialStreamWindow {
		return initialStreamWindow
	}
	return w
}

// windowLimit is what the stream's window may be now: the initial window
// until it is admitted (Config.AdmitStreams), then its tuned window. Must
// be called with recvLock held.
func (s *Stream) windowLimit() uint32 {
	if s.session.config.AdmitStreams && !s.admitted {
		return initialStreamWindow
	}
	return s.window
}

// tuneWindow runs as the stream is about to grant the peer the consumed
// bytes its reader took since the last update, and grows the window when
// the peer filled half of it within two round trips. It returns the
// window to grant up to. Must be called with recvLock held.
func (s *Stream) tuneWindow(consumed uint32) uint32 {
	limit := s.windowLimit()
	maxWindow := s.session.config.MaxStreamWindowSize
	if limit != s.window || s.window >= maxWindow {
		return limit
	}
	now := time.Now()
	if s.epoch.IsZero() {
		// The first grant of the whole window (from the protocol's
		// initial one, or on admission) frees nothing the reader took.
		s.epoch = now
		return limit
	}
	elapsed := now.Sub(s.epoch)
	s.epoch = now
	if windowTooSmall(s.window, consumed, elapsed, s.session.roundTrip()) {
		if s.window > maxWindow/2 {
			s.window = maxWindow
		} else {
			s.window *= 2
		}
	}
	return s.window
}

// windowTooSmall reports whether a window of that size held the peer
// back: its reader consumed bytes (at least half of it, or no update
// would be due) in less time than four round trips times the share of
// the window they are, i.e. half a window within two round trips. An
// unknown round trip (0) grows nothing.
func windowTooSmall(window, consumed uint32, elapsed, rtt time.Duration) bool {
	if rtt <= 0 || window == 0 {
		return false
	}
	return float64(elapsed) < 4*float64(consumed)/float64(window)*float64(rtt)
}
