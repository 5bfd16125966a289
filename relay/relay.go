package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/wire"
)

// How long an agent waits, after the peer has closed its end, for its own
// sending direction to finish; and how long it tries to deliver an ABORT.
const (
	peerCloseGrace    = 10 * time.Second
	abortWriteTimeout = 5 * time.Second
)

// AbortError says why a relay ended without a clean close in both
// directions. The plaintext side has been reset (TCP RST).
type AbortError struct {
	Dir    string         // "plain→stream", "stream→plain", or "" for the agent itself
	Code   wire.AbortCode // why, in protocol terms
	ByPeer bool           // the peer sent ABORT, or the stream ended early
	Err    error          // the local cause, when there is one
}

func (e *AbortError) Error() string {
	switch {
	case e.ByPeer && e.Err != nil:
		return fmt.Sprintf("aborted by peer: %v", e.Err)
	case e.ByPeer:
		return fmt.Sprintf("aborted by peer: %s", e.Code)
	case e.Dir != "" && e.Err != nil:
		return fmt.Sprintf("%s: %v", e.Dir, e.Err)
	case e.Err != nil:
		return e.Err.Error()
	}
	return e.Code.String()
}

func (e *AbortError) Unwrap() error { return e.Err }

// Stats counts the payload bytes moved in each direction.
type Stats struct {
	Sent     int64 // plaintext → stream
	Received int64 // stream → plaintext
}

type eventKind int

const (
	evSentCloseWrite eventKind = iota // plain side ended cleanly; CLOSE_WRITE sent
	evRecvCloseWrite                  // peer's direction ended cleanly
	evPeerClosed                      // stream ended after CLOSE_WRITE
	evAbort
)

type relayEvent struct {
	kind       eventKind
	abort      *AbortError
	notifyPeer bool // send an ABORT frame so the peer resets its side too
}

// relay moves bytes between a plaintext TCP connection and a stream. The
// goroutine that calls Stream runs the send direction (plain→stream); the
// receive direction (stream→plain) runs on goroutines of its own. There is
// no third goroutine to coordinate them: each direction reports what
// happened to report, which decides under mu, and whichever direction ends
// last finishes the relay (see exit).
//
// On a tunnel stream with direct delivery (idleStream), the receive
// direction keeps no goroutine while nothing waits to be read: it returns,
// and the stream starts it again (wake) when data the deliverer could not
// write, an end, or a deadline arrives. An idle relayed connection then
// costs one goroutine, parked in the poller on the plaintext socket, and
// no buffer.
type relay struct {
	plain  net.Conn
	stream net.Conn

	mu       sync.Mutex
	sentCW   bool        // CLOSE_WRITE sent
	recvCW   bool        // CLOSE_WRITE received
	failure  *relayEvent // the abort that ends the relay, if any
	live     int         // directions still running
	grace    *time.Timer // armed when the peer closed while this side still sends
	stopCtx  func() bool // unregisters the ctx watch
	result   chan error  // the relay's outcome, sent by the last direction out
	stopping atomic.Bool // set before deadlines are forced, see receive

	// The receive direction's state, used by one goroutine at a time
	// (each one started by the last, through wake).
	fr     *wire.FrameReader
	d      *deliverer
	idle   idleStream // nil: the receive direction waits in a read
	wake   func()     // starts the receive direction again (idle)
	cwSeen bool       // CLOSE_WRITE received

	lost      atomic.Bool // the session died after the peer's CLOSE_WRITE
	midFrame  atomic.Bool // a stream write was cut inside a frame
	plainShut atomic.Bool // this side sent its FIN to plain (a half-close)
	sent      atomic.Int64
	received  atomic.Int64
}

// Stream carries plain over a tunnel stream in both directions until both have ended
// cleanly (returns nil) or one side aborts (returns an *AbortError). A clean
// end of one direction becomes a half-close (CLOSE_WRITE, TCP FIN) on the
// other while the other keeps flowing. Any abnormal end resets plain, so the
// application sees an error instead of a short, clean-looking transfer.
//
// before, if not nil, runs before any frame from the stream is read (the
// opener reads the peer's status there); an error from it aborts the relay.
// Cancelling ctx aborts the relay and tells the peer the agent is stopping.
// plain is armed to close with a reset (ArmReset) until both directions
// have ended cleanly. Stream closes both plain and stream before it returns.
func Stream(ctx context.Context, plain, stream net.Conn, before func() error) (Stats, error) {
	plain = rawio.Wrap(plain) // writes that cannot be delivered directly: see internal/rawio
	ArmReset(plain)
	r := &relay{plain: plain, stream: stream, live: 2, result: make(chan error, 1)}
	r.stopCtx = context.AfterFunc(ctx, func() {
		r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{
			Code: wire.AbortShutdown, Err: stopCause(ctx)}})
	})
	go func() {
		if _, ok := stream.(idleStream); ok && directDelivery {
			growStack() // this goroutine returns once the stream is idle: see growStack
		}
		if r.receive(before) {
			r.exit()
		}
	}()
	r.send()
	r.exit()
	err := <-r.result
	return Stats{Sent: r.sent.Load(), Received: r.received.Load()}, err
}

// stopCause is why ctx was cancelled: the agent names it (the shutdown
// deadline, a second stop signal) with context.WithCancelCause.
func stopCause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && err != context.Canceled {
		return err
	}
	return errors.New("agent stopping: transfer cut")
}

// report takes one direction's news and acts on it at once: an abort resets
// the plaintext side and wakes both directions; both CLOSE_WRITEs mean done.
func (r *relay) report(ev relayEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil || r.stopping.Load() && ev.kind != evAbort {
		return // the outcome is decided; later news changes nothing
	}
	switch ev.kind {
	case evSentCloseWrite:
		r.sentCW = true
	case evRecvCloseWrite:
		r.recvCW = true
	case evPeerClosed:
		if r.sentCW || r.grace != nil {
			break
		}
		if tunnelLost(r.stream) {
			// The stream ended because the session died, not because the
			// peer closed it: nothing this side sends can arrive. Wake the
			// sender rather than let an idle application wait out the
			// grace; it reports the end (or the CLOSE_WRITE it just sent).
			r.lost.Store(true)
			r.plain.SetReadDeadline(time.Now())
		}
		r.grace = time.AfterFunc(peerCloseGrace, func() {
			r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{
				Code: wire.AbortProtocol, Err: errors.New("peer closed the stream while this side was still sending")}})
		})
	case evAbort:
		if r.stopping.Load() {
			return // already finishing cleanly
		}
		r.failure = &ev
		r.stopping.Store(true)
		ResetConn(r.plain)
		r.stream.SetDeadline(time.Now())
		return
	}
	if r.sentCW && r.recvCW {
		// Both directions ended cleanly: stop the receiver, which keeps
		// watching for an ABORT after the peer's CLOSE_WRITE.
		r.stopping.Store(true)
		r.stream.Close()
		r.stream.SetReadDeadline(time.Now())
	}
}

// exit is called by each direction as it returns; the last one out closes
// what is left, tells the peer about an abort when it should know, and
// hands the outcome to Stream.
func (r *relay) exit() {
	r.mu.Lock()
	r.live--
	last := r.live == 0
	failure := r.failure
	r.mu.Unlock()
	if !last {
		return
	}
	r.stopCtx()
	if r.grace != nil {
		r.grace.Stop()
	}
	if failure == nil {
		r.stream.Close()
		closeClean(r.plain) // the only close of plain with a FIN
		r.result <- nil
		return
	}
	if failure.notifyPeer && !r.midFrame.Load() {
		r.stream.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
		reason := ""
		if failure.abort.Err != nil {
			reason = failure.abort.Err.Error()
		}
		r.stream.Write(wire.AppendAbort(nil, failure.abort.Code, reason))
		// The peer reads the ABORT and closes its end, which ends the
		// stream (a reset now could overtake the ABORT's reason).
		r.stream.Close()
	} else {
		// The peer knows already, or cannot be told: drop the stream and
		// what it buffered at once.
		resetStream(r.stream)
	}
	r.result <- failure.abort
}

// send is the plain→stream direction.
func (r *relay) send() {
	const dir = "plain→stream"
	pr := newPlainReader(r.plain)
	buf, n, err := pr.read()
	growStack() // before the first write to the tunnel, see growStack
	for ; ; buf, n, err = pr.read() {
		if err != nil {
			if errors.Is(err, io.EOF) && !endedByReset(r.plain, &r.plainShut) {
				r.sendCloseWrite()
				return
			}
			if errors.Is(err, io.EOF) {
				err = syscall.ECONNRESET // the reset a concurrent write reported
			}
			if r.lost.Load() {
				r.report(relayEvent{kind: evAbort, abort: r.lostAbort(dir, "tunnel lost while this side was still sending")})
				return
			}
			r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: wire.AbortReset, Err: err}})
			return
		}
		b := *buf
		wire.PutFrameHeader(b, wire.FrameData, n)
		w, err := r.stream.Write(b[:wire.FrameHeaderSize+n])
		wire.PutBuffer(buf)
		if err != nil {
			if w > 0 {
				r.midFrame.Store(true)
			}
			r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: wire.AbortTunnel, Err: err}})
			return
		}
		r.sent.Add(int64(n))
	}
}

func (r *relay) sendCloseWrite() {
	if r.stopping.Load() {
		return // the relay is aborting: a CLOSE_WRITE now would tell the peer a cut transfer ended
	}
	var cw [wire.FrameHeaderSize]byte
	wire.PutFrameHeader(cw[:], wire.FrameCloseWrite, 0)
	if w, err := r.stream.Write(cw[:]); err != nil {
		if w > 0 {
			r.midFrame.Store(true)
		}
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: "plain→stream", Code: wire.AbortTunnel, Err: err}})
		return
	}
	r.report(relayEvent{kind: evSentCloseWrite})
}

// idleStream is a tunnel stream whose reader can return instead of
// waiting (tunnel.Stream.WaitDeliverFunc).
type idleStream interface {
	WaitDeliverFunc(wake *func()) bool
}

// receive is the stream→plain direction. It returns true when the
// direction has ended, false when it went idle (see relay).
func (r *relay) receive(before func() error) (done bool) {
	if before != nil {
		if err := before(); err != nil {
			r.report(relayEvent{kind: evAbort, abort: &AbortError{Code: wire.AbortProtocol, Err: err}})
			return true
		}
		if r.stopping.Load() {
			return true
		}
	}
	r.d = newDeliverer(r) // small DATA frames may reach plain without this goroutine
	src := r.d.source(r)
	if r.d != nil {
		if is, ok := r.stream.(idleStream); ok {
			// Frames are read only once WaitDeliverFunc said they are
			// there: a plain read of the stream does the rest.
			r.idle, src = is, r.stream
			r.wake = func() { go r.resume() }
		}
	}
	r.fr = wire.NewFrameReader(src)
	r.fr.SetKeepBulkBuffer(keptBufferIdle)
	return r.receiveFrames()
}

// resume runs the receive direction again after it went idle.
func (r *relay) resume() {
	growStack() // a new goroutine that may write to the tunnel, see growStack
	if r.receiveFrames() {
		r.exit()
	}
}

func (r *relay) receiveFrames() (done bool) {
	const dir = "stream→plain"
	for {
		if r.idle != nil && r.fr.Idle() && !r.idle.WaitDeliverFunc(&r.wake) {
			return false // r.wake runs when there is something to read
		}
		f, err := r.fr.Next()
		if err != nil {
			r.reportReadEnd(err, r.cwSeen)
			r.fr.Release()
			return true
		}
		if !r.frame(dir, f) {
			r.fr.Release()
			return true
		}
	}
}

// keptBufferIdle is how long a bulk stream that went idle keeps its
// receive buffer for the next burst (see wire.FrameReader.waitPoint).
var keptBufferIdle = wire.KeepBulkBuffer

// frame acts on one frame from the stream; false means the direction ended.
func (r *relay) frame(dir string, f wire.Frame) bool {
	switch f.Type {
	case wire.FrameData:
		if r.cwSeen {
			r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: wire.AbortProtocol,
				Err: fmt.Errorf("%w: DATA after CLOSE_WRITE", wire.ErrProtocol)}})
			return false
		}
		if _, err := r.plain.Write(f.Payload); err != nil {
			r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: wire.AbortReset, Err: err}})
			return false
		}
		r.received.Add(int64(len(f.Payload)))
	case wire.FrameCloseWrite:
		if !r.cwSeen {
			r.cwSeen = true
			r.d.closeWrite()
			r.plainShut.Store(true) // before the FIN: see endedByReset
			if err := closeWrite(r.plain); err != nil {
				// The application reset its connection after its own
				// half-close: what the peer sent may not have been
				// read, so its transfer must not end as complete.
				r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: wire.AbortReset,
					Err: fmt.Errorf("half-close toward the application: %w", err)}})
				return false
			}
			r.report(relayEvent{kind: evRecvCloseWrite})
		}
	case wire.FrameAbort:
		code, reason := f.AbortInfo()
		var cause error
		if reason != "" {
			cause = fmt.Errorf("%s: %s", code, reason)
		}
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: code, ByPeer: true, Err: cause}})
		return false
	}
	return true
}

func (r *relay) reportReadEnd(err error, closed bool) {
	const dir = "stream→plain"
	switch {
	case r.stopping.Load():
		r.report(relayEvent{kind: evPeerClosed})
	case closed && errors.Is(err, io.EOF):
		r.report(relayEvent{kind: evPeerClosed})
	case errors.Is(err, wire.ErrProtocol):
		r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: wire.AbortProtocol, Err: err}})
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		r.report(relayEvent{kind: evAbort, abort: r.lostAbort(dir, "stream ended without CLOSE_WRITE (tunnel lost or peer gone)")})
	default:
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: wire.AbortTunnel, Err: err}})
	}
}

// lostAbort is the abort of a stream whose tunnel ended under it: by the
// peer (or the network), unless this agent closed the tunnel itself and
// said why (a peer that no longer verifies, shutdown).
func (r *relay) lostAbort(dir, peerWords string) *AbortError {
	if c, ok := r.stream.(interface{ TunnelCloseReason() string }); ok {
		if why := c.TunnelCloseReason(); why != "" {
			return &AbortError{Dir: dir, Code: wire.AbortTunnel, Err: errors.New("tunnel closed by this agent: " + why)}
		}
	}
	return &AbortError{Dir: dir, Code: wire.AbortTunnel, ByPeer: true, Err: errors.New(peerWords)}
}

// tunnelLost reports whether c is a tunnel stream whose tunnel has ended
// (tunnel.Stream): the multiplexer reads a dead tunnel as a clean end of
// every stream.
func tunnelLost(c net.Conn) bool {
	s, ok := c.(interface{ TunnelLost() bool })
	return ok && s.TunnelLost()
}

// resetStream resets a tunnel stream (tunnel.Stream) at once, or closes
// any other stream.
func resetStream(c net.Conn) {
	if s, ok := c.(interface{ Reset() error }); ok {
		s.Reset()
		return
	}
	c.Close()
}

// closeWrite half-closes c (TCP FIN) when it can. An error means the
// connection is gone (reset by the application).
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

// ResetConn closes c with a TCP reset (linger 0), so the application sees
// an error rather than a clean end of stream.
//
// A Unix socket has no reset; it is just closed. On Linux the application
// then reads what was already delivered, and its next read or write fails
// with ECONNRESET (once, whichever comes first) when it had sent bytes the
// relay had not read yet (a cut in mid-upload); otherwise its reads end as
// at a clean end-of-stream, and its next write fails with EPIPE.
func ResetConn(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
