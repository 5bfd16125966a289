package yamux

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

type streamState int

const (
	streamInit streamState = iota
	streamSYNSent
	streamSYNReceived
	streamEstablished
	streamLocalClose
	streamRemoteClose
	streamClosed
	streamReset
)

// Stream is used to represent a logical stream
// within a session.
type Stream struct {
	recvWindow uint32
	sendWindow uint32

	id      uint32
	session *Session

	state     streamState
	stateLock sync.Mutex

	recvBuf  *bytes.Buffer
	recvLock sync.Mutex

	controlHdr     header
	controlErr     chan error // Postern: made when first needed (held.go)
	controlHdrLock sync.Mutex

	sendHdr  header
	sendErr  chan error // Postern: made when first needed (held.go)
	sendLock sync.Mutex

	recvNotifyCh chan struct{}
	sendNotifyCh chan struct{}

	// Postern: a deadline of its own type (see deadline), not an
	// atomic.Value, which allocates a copy of every time stored.
	readDeadline  deadline
	writeDeadline deadline

	// establishCh is notified if the stream is established or being closed.
	establishCh chan struct{}
	// Postern: openTimer enforces StreamOpenTimeout on a stream we
	// opened; stopped where establishCh is notified. Set before the
	// stream is registered, never changed.
	openTimer *time.Timer

	// closeTimer is set with stateLock held to honor the StreamCloseTimeout
	// setting on Session.
	closeTimer *time.Timer

	// Postern: admitted is set by Admit (see Config.AdmitStreams); held is
	// recvBuf's capacity, counted against Config.Buffer; discard drops whatever
	// the peer sends (see Discard). All three are guarded by recvLock.
	admitted bool
	held     int64
	discard  bool

	// Postern: window is the receive window the stream grants once
	// admitted, and epoch when it last granted more, zero until it first
	// granted the whole window (autotune.go); both guarded by recvLock.
	window uint32
	epoch  time.Time

	// Postern: direct delivery (deliver.go), guarded by recvLock: the
	// function SetDeliver set, whether a reader waits in WaitDeliver, and
	// what tryDeliver tells readData after it.
	deliver    func([]byte) int
	delivering bool
	delivered  bool // the whole frame was taken
	overBudget bool // what was not taken did not fit the budget

	// Postern: an idle reader's wake-up (held.go), run once by the next
	// notification of the stream's reader.
	wake atomic.Pointer[func()]
}

// newStream is used to construct a new stream within
// a given session for an ID
func newStream(session *Session, id uint32, state streamState) *Stream {
	s := &Stream{
		id:           id,
		session:      session,
		state:        state,
		controlHdr:   header(make([]byte, headerSize)),
		sendHdr:      header(make([]byte, headerSize)),
		recvWindow:   initialStreamWindow,
		sendWindow:   initialStreamWindow,
		recvNotifyCh: make(chan struct{}, 1),
		sendNotifyCh: make(chan struct{}, 1),
		establishCh:  make(chan struct{}, 1),
		window:       session.config.startWindow(),
	}
	return s
}

// Session returns the associated stream session
func (s *Stream) Session() *Session {
	return s.session
}

// StreamID returns the ID of this stream
func (s *Stream) StreamID() uint32 {
	return s.id
}

// Read is used to read from the stream
func (s *Stream) Read(b []byte) (n int, err error) {
	defer asyncNotify(s.recvNotifyCh)
START:

	// If the stream is closed and there's no data buffered, return EOF
	s.stateLock.Lock()
	switch s.state {
	case streamLocalClose:
		// LocalClose only prohibits further local writes. Handle reads normally.
	case streamRemoteClose:
		fallthrough
	case streamClosed:
		s.recvLock.Lock()
		if s.recvBuf == nil || s.recvBuf.Len() == 0 {
			s.recvLock.Unlock()
			s.stateLock.Unlock()
			return 0, io.EOF
		}
		s.recvLock.Unlock()
	case streamReset:
		s.stateLock.Unlock()
		return 0, ErrConnectionReset
	}
	s.stateLock.Unlock()

	// If there is no data available, block
	s.recvLock.Lock()
	if s.recvBuf == nil || s.recvBuf.Len() == 0 {
		s.recvLock.Unlock()
		goto WAIT
	}

	// Read any bytes
	n, _ = s.recvBuf.Read(b)
	s.recvLock.Unlock()

	// Send a window update potentially
	err = s.sendWindowUpdate()
	if err == ErrSessionShutdown {
		err = nil
	}
	// Postern: an update that cannot be sent does not fail a read that
	// returned data: the session is ending, and the next read says so.
	if n > 0 {
		err = nil
	}
	return n, err

WAIT:
	var timeout <-chan time.Time
	var timer *time.Timer
	if readDeadline := s.readDeadline.get(); !readDeadline.IsZero() {
		delay := time.Until(readDeadline)
		if delay <= 0 {
			return 0, ErrTimeout // Postern: passed already, no timer needed
		}
		timer = time.NewTimer(delay)
		timeout = timer.C
	}
	select {
	case <-s.session.shutdownCh:
	case <-s.recvNotifyCh:
	case <-timeout:
		return 0, ErrTimeout
	}
	if timer != nil {
		if !timer.Stop() {
			<-timeout
		}
	}
	goto START
}

// Write is used to write to the stream
func (s *Stream) Write(b []byte) (n int, err error) {
	s.sendLock.Lock()
	defer s.sendLock.Unlock()
	total := 0
	for total < len(b) {
		n, err := s.write(b[total:])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// write is used to write to the stream, may return on
// a short write.
func (s *Stream) write(b []byte) (n int, err error) {
	var flags uint16
	var max uint32
	var body []byte
START:
	s.stateLock.Lock()
	switch s.state {
	case streamLocalClose:
		fallthrough
	case streamClosed:
		s.stateLock.Unlock()
		return 0, ErrStreamClosed
	case streamReset:
		s.stateLock.Unlock()
		return 0, ErrConnectionReset
	}
	s.stateLock.Unlock()

	// If there is no data available, block
	window := atomic.LoadUint32(&s.sendWindow)
	if window == 0 {
		goto WAIT
	}

	// Determine the flags if any
	flags = s.sendFlags()

	// Send up to our send window
	max = min(window, uint32(len(b)))
	body = b[:max]

	// Send the header
	s.sendHdr.encode(typeData, flags, s.id, max)
	if err = s.session.waitForStreamSend(s.sendHdr, body, &s.sendErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.sendHdr = header(make([]byte, headerSize))
		}
		return 0, err
	}

	// Reduce our send window
	atomic.AddUint32(&s.sendWindow, ^uint32(max-1))

	// Unlock
	return int(max), err

WAIT:
	var timeout <-chan time.Time
	var timer *time.Timer
	if writeDeadline := s.writeDeadline.get(); !writeDeadline.IsZero() {
		delay := time.Until(writeDeadline)
		if delay <= 0 {
			return 0, ErrTimeout // Postern: passed already, no timer needed
		}
		timer = time.NewTimer(delay)
		timeout = timer.C
	}
	select {
	case <-s.session.shutdownCh:
	case <-s.sendNotifyCh:
	case <-timeout:
		return 0, ErrTimeout
	}
	if timer != nil {
		if !timer.Stop() {
			<-timeout
		}
	}
	goto START
}

// sendFlags determines any flags that are appropriate
// based on the current stream state
func (s *Stream) sendFlags() uint16 {
	s.stateLock.Lock()
	defer s.stateLock.Unlock()
	var flags uint16
	switch s.state {
	case streamInit:
		flags |= flagSYN
		s.state = streamSYNSent
	case streamSYNReceived:
		flags |= flagACK
		s.state = streamEstablished
	}
	return flags
}

// sendWindowUpdate potentially sends a window update enabling
// further writes to take place. Must be invoked with the lock.
func (s *Stream) sendWindowUpdate() error { return s.updateWindow(updateWait) }

// Postern: how updateWindow sends the update.
type updateHow int

const (
	updateWait   updateHow = iota // as a stream frame, waiting for it (upstream)
	updateQueued                  // queued ahead of stream data, not waited for
	// updateAck is written on the caller's goroutine when nothing is
	// queued (direct.go), otherwise queued as updateQueued: accepting a
	// stream then costs no send-loop wake-up, and the answer the accepter
	// writes next need not queue behind the ACK.
	updateAck
)

// Postern: updateWindow is sendWindowUpdate, sent as how says
// (AcceptStream's ACK is updateAck, an admitted stream's update
// updateQueued).
func (s *Stream) updateWindow(how updateHow) error {
	s.controlHdrLock.Lock()
	defer s.controlHdrLock.Unlock()

	// Determine the delta update
	var bufLen uint32
	s.recvLock.Lock()
	// Postern: a stream not yet admitted keeps the initial window, an
	// admitted one its tuned window (autotune.go).
	max := s.windowLimit()
	if s.recvBuf != nil {
		bufLen = uint32(s.recvBuf.Len())
	}
	delta := (max - bufLen) - s.recvWindow
	if s.discard {
		delta = 0 // Postern: no more credit for data nobody reads
	}
	if delta >= max/2 {
		if w := s.tuneWindow(delta); w > max {
			delta, max = delta+(w-max), w
		}
	}

	// Determine the flags if any
	flags := s.sendFlags()

	// Check if we can omit the update
	if delta < (max/2) && flags == 0 {
		s.recvLock.Unlock()
		return nil
	}

	// Update our window
	s.recvWindow += delta
	s.recvLock.Unlock()

	// Postern: an ACK is queued ahead of stream data and not waited for,
	// so accepting a stream stays quick however busy the link is.
	if how != updateWait {
		hdr := header(make([]byte, headerSize))
		hdr.encode(typeWindowUpdate, flags, s.id, delta)
		if how == updateAck {
			if ok, err := s.session.tryDirect(hdr, nil); ok {
				return err
			}
		}
		return s.session.sendControl(hdr)
	}

	// Send the header
	s.controlHdr.encode(typeWindowUpdate, flags, s.id, delta)
	if err := s.session.waitForStreamSend(s.controlHdr, nil, &s.controlErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.controlHdr = header(make([]byte, headerSize))
		}
		return err
	}
	return nil
}

// sendClose is used to send a FIN
func (s *Stream) sendClose() error {
	s.controlHdrLock.Lock()
	defer s.controlHdrLock.Unlock()

	flags := s.sendFlags()
	flags |= flagFIN
	s.controlHdr.encode(typeWindowUpdate, flags, s.id, 0)
	if err := s.session.waitForStreamSend(s.controlHdr, nil, &s.controlErr); err != nil {
		if errors.Is(err, ErrSessionShutdown) || errors.Is(err, ErrConnectionWriteTimeout) {
			// Message left in ready queue, header re-use is unsafe.
			s.controlHdr = header(make([]byte, headerSize))
		}
		return err
	}
	return nil
}

// Close is used to close the stream
func (s *Stream) Close() error {
	closeStream := false
	s.stateLock.Lock()
	switch s.state {
	// Opened means we need to signal a close
	case streamSYNSent:
		fallthrough
	case streamSYNReceived:
		fallthrough
	case streamEstablished:
		s.state = streamLocalClose
		goto SEND_CLOSE

	case streamLocalClose:
	case streamRemoteClose:
		s.state = streamClosed
		closeStream = true
		goto SEND_CLOSE

	case streamClosed:
	case streamReset:
	default:
		panic("unhandled state")
	}
	s.stateLock.Unlock()
	return nil
SEND_CLOSE:
	// This shouldn't happen (the more realistic scenario to cancel the
	// timer is via processFlags) but just in case this ever happens, we
	// cancel the timer to prevent dangling timers.
	if s.closeTimer != nil {
		s.closeTimer.Stop()
		s.closeTimer = nil
	}

	// If we have a StreamCloseTimeout set we start the timeout timer.
	// We do this only if we're not already closing the stream since that
	// means this was a graceful close.
	//
	// This prevents memory leaks if one side (this side) closes and the
	// remote side poorly behaves and never responds with a FIN to complete
	// the close. After the specified timeout, we clean our resources up no
	// matter what.
	if !closeStream && s.session.config.StreamCloseTimeout > 0 {
		s.closeTimer = time.AfterFunc(
			s.session.config.StreamCloseTimeout, s.closeTimeout)
	}

	s.stateLock.Unlock()
	s.sendClose()
	s.notifyWaiting()
	if closeStream {
		s.session.closeStream(s.id)
	}
	return nil
}

// closeTimeout is called after StreamCloseTimeout during a close to
// close this stream.
func (s *Stream) closeTimeout() {
	// Close our side forcibly
	s.forceClose()

	// Free the stream from the session map
	s.session.closeStream(s.id)

	// Send a RST so the remote side closes too.
	s.sendLock.Lock()
	defer s.sendLock.Unlock()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeWindowUpdate, flagRST, s.id, 0)
	_ = s.session.sendNoWait(hdr)
}

// forceClose is used for when the session is exiting
func (s *Stream) forceClose() {
	s.stateLock.Lock()
	s.state = streamClosed
	s.stateLock.Unlock()
	s.notifyWaiting()
}

// processFlags is used to update the state of the stream
// based on set flags, if any. Lock must be held
func (s *Stream) processFlags(flags uint16) error {
	s.stateLock.Lock()

	// Close the stream without holding the state lock
	// (Postern: upstream's defers ran closeStream with it held; closeStream
	// now takes recvLock, which a reader holds while it takes stateLock).
	closeStream := false
	defer func() {
		if closeStream && s.closeTimer != nil {
			// Stop our close timeout timer since we gracefully closed
			s.closeTimer.Stop()
		}
		s.stateLock.Unlock()
		if closeStream {
			s.session.closeStream(s.id)
		}
	}()

	if flags&flagACK == flagACK {
		if s.state == streamSYNSent {
			s.state = streamEstablished
		}
		asyncNotify(s.establishCh)
		if s.openTimer != nil {
			s.openTimer.Stop()
		}
		s.session.establishStream(s.id)
	}
	if flags&flagFIN == flagFIN {
		switch s.state {
		case streamSYNSent:
			fallthrough
		case streamSYNReceived:
			fallthrough
		case streamEstablished:
			s.state = streamRemoteClose
			s.notifyWaiting()
		case streamLocalClose:
			s.state = streamClosed
			closeStream = true
			s.notifyWaiting()
		default:
			s.session.logger.Printf("[ERR] yamux: unexpected FIN flag in state %d", s.state)
			return ErrUnexpectedFlag
		}
	}
	if flags&flagRST == flagRST {
		s.state = streamReset
		closeStream = true
		s.notifyWaiting()
	}
	return nil
}

// notifyWaiting notifies all the waiting channels
func (s *Stream) notifyWaiting() {
	s.notifyRecv() // Postern: wakes an idle reader too (held.go)
	asyncNotify(s.sendNotifyCh)
	asyncNotify(s.establishCh)
	if s.openTimer != nil {
		s.openTimer.Stop()
	}
}

// incrSendWindow updates the size of our send window
func (s *Stream) incrSendWindow(hdr header, flags uint16) error {
	if err := s.processFlags(flags); err != nil {
		return err
	}

	// Increase window, unblock a sender
	atomic.AddUint32(&s.sendWindow, hdr.Length())
	asyncNotify(s.sendNotifyCh)
	return nil
}

// readData is used to handle a data frame
func (s *Stream) readData(hdr header, flags uint16, conn io.Reader) error {
	if err := s.processFlags(flags); err != nil {
		return err
	}

	// Check that our recv window is not exceeded
	length := hdr.Length()
	if length == 0 {
		return nil
	}

	// Wrap in a limited reader (Postern: the session's, reused)
	body := &s.session.frameBody
	*body = io.LimitedReader{R: conn, N: int64(length)}
	conn = body

	// Copy into buffer
	s.recvLock.Lock()

	if length > s.recvWindow {
		s.session.logger.Printf("[ERR] yamux: receive window exceeded (stream: %d, remain: %d, recv: %d)", s.id, s.recvWindow, length)
		s.recvLock.Unlock()
		return ErrRecvWindowExceeded
	}

	// Postern: a reader waiting in WaitDeliver takes the frame first.
	if ok, err := s.tryDeliver(length, body.R); ok {
		delivered, over := s.delivered, s.overBudget
		s.delivered, s.overBudget = false, false
		s.recvLock.Unlock()
		switch {
		case err != nil:
			s.session.logger.Printf("[ERR] yamux: Failed to read stream data: %v", err)
			return err
		case over:
			s.session.logger.Printf("[WARN] yamux: receive buffer budget exhausted, resetting stream %d", s.id)
			s.Reset()
		case delivered:
			if err := s.updateDelivered(); err != nil && err != ErrSessionShutdown {
				s.session.logger.Printf("[WARN] yamux: window update for stream %d not queued: %v", s.id, err)
			}
		default:
			s.notifyRecv() // Postern: see held.go
		}
		return nil
	}

	// Postern: data nobody will read is dropped, and data the buffer
	// budget has no room for resets its stream (see reserve).
	if s.discard || !s.reserve(int(length)) {
		over := !s.discard
		s.recvWindow -= length
		s.recvLock.Unlock()
		if _, err := io.Copy(io.Discard, conn); err != nil {
			return err
		}
		if over {
			s.session.logger.Printf("[WARN] yamux: receive buffer budget exhausted, resetting stream %d", s.id)
			s.Reset()
		}
		return nil
	}

	// Postern: the frame is read straight into the room reserve made
	// (io.Copy into a bytes.Buffer would grow it past the frame).
	dst := s.recvBuf.AvailableBuffer()[:length]
	copied, err := io.ReadFull(conn, dst)
	s.recvBuf.Write(dst[:copied])
	if err != nil {
		s.session.logger.Printf("[ERR] yamux: Failed to read stream data: %v", err)
		s.recvLock.Unlock()
		return err
	}

	// Decrement the receive window
	s.recvWindow -= uint32(copied)
	s.recvLock.Unlock()

	// Unblock any readers
	s.notifyRecv() // Postern: see held.go
	return nil
}

// SetDeadline sets the read and write deadlines
func (s *Stream) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	if err := s.SetWriteDeadline(t); err != nil {
		return err
	}
	return nil
}

// SetReadDeadline sets the deadline for blocked and future Read calls.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.readDeadline.set(t)
	s.notifyRecv() // Postern: see held.go
	return nil
}

// SetWriteDeadline sets the deadline for blocked and future Write calls
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDeadline.set(t)
	asyncNotify(s.sendNotifyCh)
	return nil
}

// Shrink is used to compact the amount of buffers utilized
// This is useful when using Yamux in a connection pool to reduce
// the idle memory utilization.
func (s *Stream) Shrink() {
	s.recvLock.Lock()
	if s.recvBuf != nil && s.recvBuf.Len() == 0 {
		s.recvBuf = nil
		s.release(s.held) // Postern
	}
	s.recvLock.Unlock()
}

// Postern: Buffered is how many received bytes the stream holds: what a
// Read would return without waiting.
func (s *Stream) Buffered() int {
	s.recvLock.Lock()
	defer s.recvLock.Unlock()
	if s.recvBuf == nil {
		return 0
	}
	return s.recvBuf.Len()
}

// Postern: reserve makes room in recvBuf for n more bytes. The buffer's
// whole capacity counts against the budget (held): it grows by doubling,
// never past the stream's current window, and a new buffer takes only
// what is unread. It returns false when the budget has no room. Must be
// called with recvLock held.
func (s *Stream) reserve(n int) bool {
	used, old := 0, 0
	if s.recvBuf != nil {
		used, old = s.recvBuf.Len(), s.recvBuf.Cap()
		if used == 0 {
			s.recvBuf.Reset() // all read: the room at the front is free again
		}
		if s.recvBuf.Available() >= n {
			return true
		}
		if used+n <= old/2 {
			// Room enough once what is unread moves to the front, which
			// Grow does in place at this size.
			s.recvBuf.Grow(n)
			if c := s.recvBuf.Cap(); c != old {
				s.session.config.Buffer.give(s.held) // it allocated after all
				s.held = 0
				if !s.session.config.Buffer.take(int64(c)) {
					return false
				}
				s.held = int64(c)
			}
			return true
		}
	}
	limit := int(s.windowLimit())
	if s.recvBuf != nil && old >= limit && used+n <= old {
		// At its largest already: move what is unread to the front of
		// the same array (an overlapping copy) rather than allocate an
		// array of the same size and copy into that. A bulk stream whose
		// reader lags came here once per burst of the peer's.
		unread := s.recvBuf.Bytes()
		s.recvBuf.Reset()
		s.recvBuf.Write(unread)
		return true
	}
	want := 2 * old
	if want > limit {
		want = limit
	}
	if want < used+n {
		want = used + n
	}
	if !s.session.config.Buffer.take(int64(want)) {
		return false
	}
	buf := make([]byte, used, want)
	if s.recvBuf != nil {
		copy(buf, s.recvBuf.Bytes())
	}
	s.recvBuf = bytes.NewBuffer(buf)
	s.release(s.held)
	s.held = int64(want)
	return true
}

// Postern: release returns n bytes of recvBuf's capacity to the budget.
// Must be called with recvLock held.
func (s *Stream) release(n int64) {
	if n > s.held {
		n = s.held
	}
	s.held -= n
	s.session.config.Buffer.give(n)
}

// Postern: releaseBuffer returns everything the stream holds to the budget
// when it leaves its session, and drops what the peer sends after that.
// What is buffered stays readable.
func (s *Stream) releaseBuffer() {
	s.recvLock.Lock()
	s.release(s.held)
	s.discard = true
	s.recvLock.Unlock()
}

// Postern: Admit lets the stream's receive window grow to
// MaxStreamWindowSize (see Config.AdmitStreams) and sends the update.
func (s *Stream) Admit() error {
	s.recvLock.Lock()
	s.admitted = true
	s.recvLock.Unlock()
	if err := s.sendWindowUpdate(); err != nil && err != ErrSessionShutdown {
		return err
	}
	return nil
}

// Postern: Discard drops what the stream has buffered and everything the
// peer sends on it from now on, and grants the peer no more window,
// without ending the stream: for a stream whose answer has been written
// and that nobody will read again (a refused open request).
func (s *Stream) Discard() {
	s.recvLock.Lock()
	s.discard = true
	s.release(s.held)
	s.recvBuf = nil
	s.recvLock.Unlock()
}

// Postern: Reset ends the stream at once in both directions (RST, which
// upstream sends only on timeouts): the peer's reads and writes fail with
// ErrConnectionReset, what this side has buffered is dropped, and the
// stream leaves the session now rather than after StreamCloseTimeout.
func (s *Stream) Reset() error {
	s.stateLock.Lock()
	if s.state == streamReset || s.state == streamClosed {
		s.stateLock.Unlock()
		return nil
	}
	s.state = streamReset
	if s.closeTimer != nil {
		s.closeTimer.Stop()
		s.closeTimer = nil
	}
	s.stateLock.Unlock()
	s.Discard()
	s.notifyWaiting()
	s.session.closeStream(s.id)
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeWindowUpdate, flagRST, s.id, 0)
	return s.session.sendControl(hdr)
}

// deadline is a stream's read or write deadline, the zero time for none.
// Postern: upstream keeps each in an atomic.Value, and every Store boxes
// the time.Time it is given: two allocations per stream at its creation
// and one per deadline set or cleared after (a tunnel's stream has its read
// deadline set, cleared and set again at its end).
type deadline struct {
	mu sync.Mutex
	t  time.Time
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	d.mu.Unlock()
}

func (d *deadline) get() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t
}
