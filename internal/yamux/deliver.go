package yamux

import "io"

// Postern: direct delivery. Upstream copies every data frame into the
// stream's buffer on the session's receive goroutine and wakes the
// stream's reader, which copies it out again: a hand-off to another
// goroutine per frame. A reader that waits in WaitDeliver instead lets the
// receive goroutine pass it a frame's payload at once (the deliver
// function given to SetDeliver), straight from the connection's read
// buffer; only what the function does not take is buffered, and only then
// is the reader woken. The wire protocol is unchanged: flow-control
// windows, the buffer budget, Discard and Reset behave as for buffered
// data (delivered bytes count as read).

// SetDeliver sets the function WaitDeliver offers data frames to. It
// runs on the session's receive goroutine, with the stream's receive lock
// held, and must not block or call the stream's methods: it returns how
// many leading bytes of p it took (p is valid only during the call, and
// the function may change bytes of p before the count it returns).
func (s *Stream) SetDeliver(fn func(p []byte) int) {
	s.recvLock.Lock()
	s.deliver = fn
	s.recvLock.Unlock()
}

// WaitDeliver waits as Read(nil) does: until the stream has buffered data,
// has ended, or its read deadline passed (then it returns Read's error).
// While it waits, data frames arriving with nothing buffered are offered
// to the SetDeliver function first; those it takes in full do not end the
// wait.
func (s *Stream) WaitDeliver() error {
	s.recvLock.Lock()
	s.delivering = s.deliver != nil
	s.recvLock.Unlock()
	_, err := s.Read(nil)
	s.recvLock.Lock()
	s.delivering = false
	s.recvLock.Unlock()
	return err
}

// tryDeliver offers a data frame of length bytes, still unread on conn, to
// a waiting reader's deliver function. It returns true when it handled the
// frame (delivered, and buffered what was not taken), false when the
// caller must buffer it as usual (nothing read from conn then). Must be
// called with recvLock held, after the window check; it leaves recvLock
// held.
func (s *Stream) tryDeliver(length uint32, conn io.Reader) (bool, error) {
	br, ok := conn.(peeker)
	// Postern: an idle reader (WaitDeliverFunc) delivers too.
	idle := s.deliver != nil && s.wake.Load() != nil
	if !ok || !(s.delivering || idle) || s.discard || int(length) > br.Size() ||
		(s.recvBuf != nil && s.recvBuf.Len() > 0) {
		return false, nil
	}
	p, err := br.Peek(int(length))
	if err != nil {
		return true, err
	}
	took := s.deliver(p)
	rest := p[took:]
	s.recvWindow -= length
	if len(rest) > 0 && !s.reserve(len(rest)) {
		// The budget has no room for what is left: as readData does,
		// the stream is reset (after the lock is released).
		br.Discard(int(length))
		s.overBudget = true
		return true, nil
	}
	if len(rest) > 0 {
		s.recvBuf.Write(rest)
	}
	br.Discard(int(length))
	s.delivered = len(rest) == 0
	return true, nil
}

// peeker is the session's buffered reader.
type peeker interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Size() int
}

// updateDelivered grants the peer the window that delivered bytes freed,
// as Read does for buffered ones, without waiting: it runs on the
// receive goroutine, which must never wait for a write.
func (s *Stream) updateDelivered() error {
	s.recvLock.Lock()
	max := s.windowLimit()
	var bufLen uint32
	if s.recvBuf != nil {
		bufLen = uint32(s.recvBuf.Len())
	}
	delta := (max - bufLen) - s.recvWindow
	if s.discard || delta < max/2 {
		s.recvLock.Unlock()
		return nil
	}
	if w := s.tuneWindow(delta); w > max {
		delta += w - max
	}
	s.recvWindow += delta
	s.recvLock.Unlock()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeWindowUpdate, 0, s.id, delta)
	return s.session.sendControl(hdr)
}
