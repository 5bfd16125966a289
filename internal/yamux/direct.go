package yamux

import (
	"runtime"
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
// taken and could not be left) is written by the send loop as before, ahead
// of any direct write: a direct write happens only when no frame is queued
// or being written. The wire format is unchanged.
//
// A small frame whose writer finds the lock taken is left for the lock's
// holder instead of queued: the writer copies it into the session's left
// frames and returns, and whoever holds the lock writes every left frame,
// in order, before anything else and before it lets go (unlockDirect).
// Streams that answer at the same moment (a hub's backends) so cost no
// hand-off to the send loop and no wake-up to collect the result, and go
// out together in one write.
//
// Config.DirectWrite turns it on. A direct write still honours
// ConnectionWriteTimeout: a write to the connection that takes longer ends
// the session (the link is full and not draining), which closes the
// connection and so unblocks the write, and the caller gets
// ErrConnectionWriteTimeout.
type directWriter struct {
	// mu serializes writes to the connection: the send loop's and direct
	// writes. Taken with TryLock by direct writers, who leave their frame
	// or fall back to the queue when it is held.
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

	// leftMu guards left: frames (header and body) left by writers who
	// found mu taken, for its holder to write. nil when there are none,
	// so an idle session holds no buffer. hasLeft is set while left holds
	// a frame.
	leftMu  sync.Mutex
	left    *[]byte
	hasLeft atomic.Bool

	// gatherRest counts the small writes left before the holder yields
	// again, and gatherMisses the yields in a row that gathered nothing
	// (both guarded by mu): see gather.
	gatherRest   int
	gatherMisses int
}

const (
	// maxLeftBody is the largest frame body a writer leaves for the lock
	// holder; a larger one is queued (a bulk stream's frames need no
	// copy, and one holder must not be made to write several of them).
	maxLeftBody = 16 << 10
	// maxLeft bounds the left frames' bytes; past it, frames are queued.
	maxLeft = 64 << 10
)

var leftPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}

// tryDirect writes hdr and body to the connection on the caller's
// goroutine if nothing is queued and the write lock is free, or leaves
// them for the lock's holder if it is taken. ok is false when the caller
// must queue the frame instead.
func (s *Session) tryDirect(hdr header, body []byte) (ok bool, err error) {
	d := &s.direct
	if !s.config.DirectWrite || d.queued.Load() != 0 {
		return false, nil
	}
	if !d.mu.TryLock() {
		if !d.leave(hdr, body) {
			return false, nil
		}
		// The holder writes it before it lets go, unless it let go
		// before the frame was left: then whoever takes the lock next
		// does, and this writer tries to be that one.
		if !d.hasLeft.Load() || !d.mu.TryLock() {
			return true, nil
		}
		return true, s.directDone(s.unlockDirect(nil))
	}
	if d.queued.Load() != 0 {
		if err := s.unlockDirect(nil); err != nil {
			return true, s.directDone(err)
		}
		return false, nil
	}
	select {
	case <-s.shutdownCh:
		s.unlockDirect(ErrSessionShutdown)
		return true, ErrSessionShutdown
	default:
	}
	if len(body) <= maxLeftBody {
		d.gather()
	}
	// Frames left while this writer took the lock go first; a small
	// frame joins them, so all go out in one write.
	if d.hasLeft.Load() && d.leave(hdr, body) {
		err = s.writeLeft()
	} else if err = s.writeLeft(); err == nil {
		err = s.writeTimed(hdr, body)
	}
	return true, s.directDone(s.unlockDirect(err))
}

const (
	// gatherMissLimit is how many yields in a row may gather nothing
	// before the holder stops yielding for gatherPause small writes.
	gatherMissLimit = 4
	gatherPause     = 64
)

// gather lets the goroutines that are ready to run do so before the
// holder writes its small frame: when several streams have data at the
// same moment (the poller woke their relays together), each finds the
// lock taken and leaves its frame, and all go out in one write and one
// system call, in fewer TLS records, instead of one each. The peer reads
// them in one go too. When nobody is ready (one request at a time),
// yielding costs a pass through the scheduler, and with more than one P
// it also wakes an idle thread to look for work (Gosched calls wakep),
// which may take the holder with it: so after gatherMissLimit
// yields in a row that gathered nothing, the holder stops yielding for
// gatherPause small writes, then tries again. The caller holds mu.
func (d *directWriter) gather() {
	if d.gatherRest > 0 {
		d.gatherRest--
		return
	}
	yield()
	if d.hasLeft.Load() {
		d.gatherMisses = 0
		return
	}
	if d.gatherMisses++; d.gatherMisses >= gatherMissLimit {
		d.gatherMisses = 0
		d.gatherRest = gatherPause
	}
}

// yield is runtime.Gosched, a variable for tests.
var yield = runtime.Gosched

// directDone turns a failed direct write into the caller's error and ends
// the session.
func (s *Session) directDone(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.direct.timedOut.Load():
		err = ErrConnectionWriteTimeout
	case s.IsClosed():
		err = ErrSessionShutdown
	default:
		s.logger.Printf("[ERR] yamux: Failed to write frame: %v", err)
	}
	s.exitErr(err)
	return err
}

// writeTimed writes a frame's header and body (body may be nil, or hdr
// may hold whole frames) to the connection under the write lock, with
// ConnectionWriteTimeout watched by the stuck timer.
func (s *Session) writeTimed(hdr, body []byte) error {
	d := &s.direct
	if d.stuck == nil {
		d.stuck = time.AfterFunc(time.Hour, s.writeStuck)
	}
	d.start.Store(time.Now().UnixNano())
	d.stuck.Reset(s.config.ConnectionWriteTimeout)
	_, err := s.conn.Write(hdr)
	if err == nil && len(body) > 0 {
		_, err = s.conn.Write(body)
	}
	d.stuck.Stop()
	d.start.Store(0)
	return err
}

// leave copies a frame into the left frames for the lock's holder, unless
// it is too big or too much is left already.
func (d *directWriter) leave(hdr header, body []byte) bool {
	if len(body) > maxLeftBody {
		return false
	}
	d.leftMu.Lock()
	defer d.leftMu.Unlock()
	if d.left != nil && len(*d.left)+len(hdr)+len(body) > maxLeft {
		return false
	}
	if d.left == nil {
		d.left = leftPool.Get().(*[]byte)
	}
	*d.left = append(append(*d.left, hdr...), body...)
	d.hasLeft.Store(true)
	return true
}

// writeLeft writes the frames left so far, in one write. The caller holds
// the write lock.
func (s *Session) writeLeft() error {
	d := &s.direct
	if !d.hasLeft.Load() {
		return nil
	}
	d.leftMu.Lock()
	buf := d.left
	d.left = nil
	d.hasLeft.Store(false)
	d.leftMu.Unlock()
	if buf == nil {
		return nil
	}
	err := s.writeTimed(*buf, nil)
	if cap(*buf) <= maxLeft+maxLeftBody {
		*buf = (*buf)[:0]
		leftPool.Put(buf)
	}
	return err
}

// unlockDirect lets go of the write lock after writing what was left
// under it. A frame left after the last look and before the unlock would
// be stranded, so it looks again after letting go, and writes it if it
// can take the lock back; if it cannot, the new holder writes it. err is
// the holder's write error so far; it returns the first error.
func (s *Session) unlockDirect(err error) error {
	d := &s.direct
	for {
		if err == nil {
			err = s.writeLeft()
		}
		if hook := testHookBeforeUnlock.Load(); hook != nil {
			(*hook)(s)
		}
		d.mu.Unlock()
		if err != nil || !d.hasLeft.Load() || !d.mu.TryLock() {
			return err
		}
	}
}

// testHookBeforeUnlock, when set, runs after the holder's last look at the
// left frames and before it lets go of the write lock.
var testHookBeforeUnlock atomic.Pointer[func(*Session)]

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
