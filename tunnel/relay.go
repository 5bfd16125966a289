package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
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
	Dir    string    // "plain→stream", "stream→plain", or "" for the agent itself
	Code   AbortCode // why, in protocol terms
	ByPeer bool      // the peer sent ABORT, or the stream ended early
	Err    error     // the local cause, when there is one
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

// RelayStats counts the payload bytes moved in each direction.
type RelayStats struct {
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

// relay moves bytes between a plaintext TCP connection and a stream. Both
// directions run at once in their own goroutines (send and receive); the
// goroutine that called Relay owns them and decides how the relay ends.
type relay struct {
	plain  net.Conn
	stream net.Conn
	events chan relayEvent
	wg     sync.WaitGroup

	stopping atomic.Bool // set before deadlines are forced, see receive
	lost     atomic.Bool // the session died after the peer's CLOSE_WRITE, see wait
	midFrame atomic.Bool // a stream write was cut inside a frame
	sent     atomic.Int64
	received atomic.Int64
}

// Relay carries plain over stream in both directions until both have ended
// cleanly (returns nil) or one side aborts (returns an *AbortError). A clean
// end of one direction becomes a half-close (CLOSE_WRITE, TCP FIN) on the
// other while the other keeps flowing. Any abnormal end resets plain, so the
// application sees an error instead of a short, clean-looking transfer.
//
// before, if not nil, runs before any frame from the stream is read (the
// opener reads the peer's status there); an error from it aborts the relay.
// Cancelling ctx aborts the relay and tells the peer the agent is stopping.
// Relay closes both plain and stream before it returns.
func Relay(ctx context.Context, plain, stream net.Conn, before func() error) (RelayStats, error) {
	r := &relay{plain: plain, stream: stream, events: make(chan relayEvent, 4)}
	r.wg.Add(2)
	go r.send()
	go r.receive(before)
	err := r.wait(ctx)
	return RelayStats{Sent: r.sent.Load(), Received: r.received.Load()}, err
}

func (r *relay) wait(ctx context.Context) error {
	var sentCW, recvCW, senderDone bool
	var grace <-chan time.Time
	for {
		select {
		case ev := <-r.events:
			switch ev.kind {
			case evSentCloseWrite:
				sentCW, senderDone = true, true
			case evRecvCloseWrite:
				recvCW = true
			case evPeerClosed:
				if !senderDone {
					if tunnelLost(r.stream) {
						// The stream ended because the session died, not
						// because the peer closed it: nothing this side
						// sends can arrive. Wake the sender rather than let
						// an idle application wait out the grace; it
						// reports the end (or the CLOSE_WRITE it just sent).
						r.lost.Store(true)
						r.plain.SetReadDeadline(time.Now())
					}
					t := time.NewTimer(peerCloseGrace)
					defer t.Stop()
					grace = t.C
				}
			case evAbort:
				return r.abort(ev)
			}
			if sentCW && recvCW {
				r.finish()
				return nil
			}
		case <-grace:
			return r.abort(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{
				Code: AbortProtocol, Err: errors.New("peer closed the stream while this side was still sending")}})
		case <-ctx.Done():
			return r.abort(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{
				Code: AbortShutdown, Err: errors.New("agent stopping: transfer cut at the shutdown deadline")}})
		}
	}
}

// finish ends a relay whose both directions closed cleanly.
func (r *relay) finish() {
	r.stopping.Store(true)
	r.stream.Close()
	r.stream.SetReadDeadline(time.Now())
	r.wg.Wait()
	r.plain.Close()
}

// abort resets the plaintext side, stops both directions, tells the peer
// when it should know, and closes the stream.
func (r *relay) abort(ev relayEvent) error {
	r.stopping.Store(true)
	resetConn(r.plain)
	r.stream.SetDeadline(time.Now())
	r.wg.Wait()
	if ev.notifyPeer && !r.midFrame.Load() {
		r.stream.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
		reason := ""
		if ev.abort.Err != nil {
			reason = ev.abort.Err.Error()
		}
		r.stream.Write(appendAbort(nil, ev.abort.Code, reason))
	}
	r.stream.Close()
	return ev.abort
}

func (r *relay) report(ev relayEvent) {
	r.events <- ev // buffered for every event a relay can produce
}

// send is the plain→stream direction.
func (r *relay) send() {
	defer r.wg.Done()
	const dir = "plain→stream"
	for {
		buf, n, err := readPlain(r.plain)
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.sendCloseWrite()
				return
			}
			if r.lost.Load() {
				r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: AbortTunnel, ByPeer: true,
					Err: errors.New("tunnel lost while this side was still sending")}})
				return
			}
			r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: AbortReset, Err: err}})
			return
		}
		b := *buf
		putFrameHeader(b, FrameData, n)
		w, err := r.stream.Write(b[:frameHeaderSize+n])
		putBuf(buf)
		if err != nil {
			if w > 0 {
				r.midFrame.Store(true)
			}
			r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: AbortTunnel, Err: err}})
			return
		}
		r.sent.Add(int64(n))
	}
}

func (r *relay) sendCloseWrite() {
	var cw [frameHeaderSize]byte
	putFrameHeader(cw[:], FrameCloseWrite, 0)
	if w, err := r.stream.Write(cw[:]); err != nil {
		if w > 0 {
			r.midFrame.Store(true)
		}
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: "plain→stream", Code: AbortTunnel, Err: err}})
		return
	}
	r.report(relayEvent{kind: evSentCloseWrite})
}

// receive is the stream→plain direction.
func (r *relay) receive(before func() error) {
	defer r.wg.Done()
	const dir = "stream→plain"
	if before != nil {
		if err := before(); err != nil {
			r.report(relayEvent{kind: evAbort, abort: &AbortError{Code: AbortProtocol, Err: err}})
			return
		}
		if r.stopping.Load() {
			return
		}
	}
	fr := newFrameReader(r.stream)
	defer fr.Release()
	closed := false // CLOSE_WRITE received
	for {
		f, err := fr.Next()
		if err != nil {
			r.reportReadEnd(err, closed)
			return
		}
		switch f.Type {
		case FrameData:
			if closed {
				r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: AbortProtocol,
					Err: protoErr("DATA after CLOSE_WRITE")}})
				return
			}
			if _, err := r.plain.Write(f.Payload); err != nil {
				r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: AbortReset, Err: err}})
				return
			}
			r.received.Add(int64(len(f.Payload)))
		case FrameCloseWrite:
			if !closed {
				closed = true
				closeWrite(r.plain)
				r.report(relayEvent{kind: evRecvCloseWrite})
			}
		case FrameAbort:
			code, reason := f.AbortInfo()
			var cause error
			if reason != "" {
				cause = fmt.Errorf("%s: %s", code, reason)
			}
			r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: code, ByPeer: true, Err: cause}})
			return
		}
	}
}

func (r *relay) reportReadEnd(err error, closed bool) {
	const dir = "stream→plain"
	switch {
	case r.stopping.Load():
		r.report(relayEvent{kind: evPeerClosed})
	case closed && errors.Is(err, io.EOF):
		r.report(relayEvent{kind: evPeerClosed})
	case errors.Is(err, ErrProtocol):
		r.report(relayEvent{kind: evAbort, notifyPeer: true, abort: &AbortError{Dir: dir, Code: AbortProtocol, Err: err}})
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: AbortTunnel, ByPeer: true,
			Err: errors.New("stream ended without CLOSE_WRITE (tunnel lost or peer gone)")}})
	default:
		r.report(relayEvent{kind: evAbort, abort: &AbortError{Dir: dir, Code: AbortTunnel, Err: err}})
	}
}

// tunnelLost reports whether c is a yamux stream whose session has ended.
// yamux reads a dead session as a clean end of every stream.
func tunnelLost(c net.Conn) bool {
	s, ok := c.(interface{ Session() *yamux.Session })
	return ok && s.Session().IsClosed()
}

// closeWrite half-closes c (TCP FIN) when it can.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
	}
}

// resetConn closes c with a TCP reset, so the application sees an error
// rather than a clean end of stream.
func resetConn(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// ResetConn closes c with a TCP reset (linger 0).
func ResetConn(c net.Conn) { resetConn(c) }
