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
	if err := s.updateWindow(true); err != nil && err != ErrSessionShutdown {
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
