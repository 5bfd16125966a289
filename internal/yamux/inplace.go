package yamux

// Postern: reading in place. Read copies what the stream buffered into the
// caller's buffer, which a relay then writes to a socket: for bulk data
// that copy is a tenth of the receiving agent's CPU. ReadInPlace hands the
// caller the stream's buffer itself, and the stream takes its other
// buffer for what arrives meanwhile: two buffers in turn, both counted
// against the budget (Config.Buffer) while the stream holds them.

// ReadInPlace waits as Read does, then returns everything the stream has
// buffered, without copying it. The bytes count as read (the peer may be
// granted their window) and stay valid until the next ReadInPlace or
// Shrink; the caller must not write to them.
func (s *Stream) ReadInPlace() ([]byte, error) {
	for {
		if _, err := s.Read(nil); err != nil {
			return nil, err
		}
		s.recvLock.Lock()
		if s.recvBuf == nil || s.recvBuf.Len() == 0 {
			// Taken meanwhile (Discard): wait again.
			s.recvLock.Unlock()
			continue
		}
		full := s.recvBuf
		data := full.Bytes()
		full.Reset() // its bytes are the caller's now
		s.recvBuf, s.spare = s.spare, full
		s.held, s.spareHeld = s.spareHeld, s.held
		s.recvLock.Unlock()
		// As Read: an update that cannot be sent does not fail a read
		// that returned data; the next call says what ended.
		s.sendWindowUpdate()
		return data, nil
	}
}

// dropSpare lets the buffer ReadInPlace lent go. Must be called with
// recvLock held.
func (s *Stream) dropSpare() {
	s.spare = nil
	if s.spareHeld > 0 {
		s.session.config.Buffer.give(s.spareHeld)
		s.spareHeld = 0
	}
}
