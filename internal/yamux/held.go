package yamux

// Postern: AdmitQueued is Admit with its window update queued for the send
// loop (like an ACK) instead of written on the caller's goroutine. The
// opener admits a stream on the goroutine that then waits for the stream's
// data for as long as the connection is held; a direct write there runs TLS
// record encryption, which grows that goroutine's stack to a size the
// runtime does not shrink again while it waits (it shrinks only stacks
// using under a quarter of their size). Queued, the update costs the send
// loop one wake-up per stream and the held stream 4 KiB less stack.
func (s *Stream) AdmitQueued() error {
	s.recvLock.Lock()
	s.admitted = true
	s.recvLock.Unlock()
	if err := s.updateWindow(updateQueued); err != nil && err != ErrSessionShutdown {
		return err
	}
	return nil
}

// Postern: waitForStreamSend is waitForSendErr for a stream's own frames.
// The channel the send loop answers on (the stream's sendErr or
// controlErr, guarded by the lock its sender holds) is made only when a
// frame is first queued: with direct writes most streams never queue one,
// and a held connection keeps two streams and so four channels.
func (s *Session) waitForStreamSend(hdr header, body []byte, errCh *chan error) error {
	if ok, err := s.tryDirect(hdr, body); ok {
		return err
	}
	if *errCh == nil {
		*errCh = make(chan error, 1)
	}
	return s.waitForSendErr(hdr, body, *errCh)
}

// Postern: idle readers. A reader that waits for a stream's data holds a
// goroutine, and with it a stack, for as long as nothing arrives: most of
// what a held, idle connection costs. WaitDeliverFunc lets the reader
// return instead, leaving a function that starts it again when there is
// something to read. Meanwhile data frames are offered to the SetDeliver
// function, as during WaitDeliver.
//
// WaitDeliverFunc returns true when a read would not wait now (data is
// buffered, the stream or session ended, or a read deadline is set: a
// deadline is honoured by reading as usual), and the caller reads.
// Otherwise it returns false and *wake runs once, on the goroutine that
// next notifies the stream's reader (data buffered, FIN, RST, a read
// deadline set, the session closing), possibly with the stream's locks
// held: it must do no more than start a goroutine. Whoever gets false must
// not read again until *wake has run.
func (s *Stream) WaitDeliverFunc(wake *func()) bool {
	s.wake.Store(wake)
	if !s.readable() {
		return false
	}
	// Ready after all: take the wake-up back, unless a notification
	// already ran it (then the goroutine it started reads instead).
	return s.wake.CompareAndSwap(wake, nil)
}

// readable reports whether Read would return without waiting (or waits
// for a deadline).
func (s *Stream) readable() bool {
	select {
	case <-s.session.shutdownCh:
		return true
	default:
	}
	if !s.readDeadline.get().IsZero() {
		return true
	}
	// One lock at a time (elsewhere recvLock is held while stateLock is
	// taken): a change after either check runs the wake-up, which
	// WaitDeliverFunc stored before it called readable.
	s.stateLock.Lock()
	state := s.state
	s.stateLock.Unlock()
	switch state {
	case streamRemoteClose, streamClosed, streamReset:
		return true
	}
	s.recvLock.Lock()
	defer s.recvLock.Unlock()
	return s.recvBuf != nil && s.recvBuf.Len() > 0
}

// notifyRecv wakes the stream's reader: one waiting in Read, or an idle
// one (WaitDeliverFunc).
func (s *Stream) notifyRecv() {
	asyncNotify(s.recvNotifyCh)
	if s.wake.Load() != nil {
		if fn := s.wake.Swap(nil); fn != nil {
			(*fn)()
		}
	}
}
