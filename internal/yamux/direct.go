package yamux

import (
	"sync"
	"sync/atomic"
	"time"
)

// Postern: direct writes. Upstream hands every frame to the session's send
// loop and waits for it: a hand-off to another goroutine (a futex wake on an
// idle machine) and back for every frame. A frame written while nothing is
// queued goes out on the caller's goroutine instead, under the session's
// write lock, so a small request crosses no goroutine on its way to the
// connection. Anything queued (control frames, data that found the lock
// taken) is written by the send loop as before, ahead of any direct write:
// a direct write happens only when no frame is queued or being written.
// The wire format is unchanged.
//
// Config.DirectWrite turns it on. A direct write still honours
// ConnectionWriteTimeout: a write to the connection that takes longer ends
// the session (the link is full and not draining), which closes the
// connection and so unblocks the write, and the caller gets
// ErrConnectionWriteTimeout.
type directWriter struct {
	// mu serializes writes to the connection: the send loop's and direct
	// writes. Taken with TryLock by direct writers, who fall back to the
	// queue when it is held.
	mu sync.Mutex
	// queued counts frames handed to the send loop and not yet written
	// (counted before they enter a channel, uncounted once written or
	// given up), so a direct write cannot overtake a queued frame.
	queued atomic.Int64
	// start is the UnixNano time the direct write in progress began, 0
	// when none is; stuck fires writeStuck ConnectionWriteTimeout after
	// it (guarded by mu).
	start    atomic.Int64
	stuck    *time.Timer
	timedOut atomic.Bool
}

// tryDirect writes hdr and body to the connection on the caller's
// goroutine if nothing is queued and the write lock is free. ok is false
// when the caller must queue the frame instead.
func (s *Session) tryDirect(hdr header, body []byte) (ok bool, err error) {
	d := &s.direct
	if !s.config.DirectWrite || d.queued.Load() != 0 || !d.mu.TryLock() {
		return false, nil
	}
	if d.queued.Load() != 0 {
		d.mu.Unlock()
		return false, nil
	}
	select {
	case <-s.shutdownCh:
		d.mu.Unlock()
		return true, ErrSessionShutdown
	default:
	}
	if d.stuck == nil {
		d.stuck = time.AfterFunc(time.Hour, s.writeStuck)
	}
	d.start.Store(time.Now().UnixNano())
	d.stuck.Reset(s.config.ConnectionWriteTimeout)
	_, err = s.conn.Write(hdr)
	if err == nil && len(body) > 0 {
		_, err = s.conn.Write(body)
	}
	d.stuck.Stop()
	d.start.Store(0)
	d.mu.Unlock()
	if err == nil {
		return true, nil
	}
	switch {
	case d.timedOut.Load():
		err = ErrConnectionWriteTimeout
	case s.IsClosed():
		err = ErrSessionShutdown
	default:
		s.logger.Printf("[ERR] yamux: Failed to write frame: %v", err)
	}
	s.exitErr(err)
	return true, err
}

// writeStuck runs when a direct write may have taken longer than
// ConnectionWriteTimeout; a timer that fired late for an earlier write
// finds a later one younger than that and does nothing.
func (s *Session) writeStuck() {
	start := s.direct.start.Load()
	if start == 0 || time.Since(time.Unix(0, start)) < s.config.ConnectionWriteTimeout {
		return
	}
	s.direct.timedOut.Store(true)
	s.logger.Printf("[ERR] yamux: write to the connection took longer than %v", s.config.ConnectionWriteTimeout)
	s.exitErr(ErrConnectionWriteTimeout)
}
