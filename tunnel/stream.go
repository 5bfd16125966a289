package tunnel

import (
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// Stream is one stream of a tunnel: one forwarded connection. Close ends
// this side's direction (a half-close); the stream is gone once both sides
// have closed it, or with its tunnel. Read and Write may be called from
// different goroutines, each by one goroutine at a time.
type Stream struct {
	st *yamux.Stream
	t  *Tunnel
}

func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.st.Read(p)
	s.count(n, false)
	return n, err
}

func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.st.Write(p)
	s.count(n, true)
	return n, err
}

func (s *Stream) Close() error                       { return s.st.Close() }
func (s *Stream) LocalAddr() net.Addr                { return s.st.LocalAddr() }
func (s *Stream) RemoteAddr() net.Addr               { return s.st.RemoteAddr() }
func (s *Stream) SetDeadline(t time.Time) error      { return s.st.SetDeadline(t) }
func (s *Stream) SetReadDeadline(t time.Time) error  { return s.st.SetReadDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.st.SetWriteDeadline(t) }

// Admit lets the stream's receive window grow from 256 KiB to the
// configured stream_window. The acceptor admits a stream once it answered
// the open request OK, the opener once it read that OK: until then a peer
// can make this side buffer no more than 256 KiB for the stream.
func (s *Stream) Admit() error { return s.st.Admit() }

// AdmitQueued is Admit for a goroutine that may go on to wait for the
// stream's data while the connection is held (the opener's relay where
// its receive direction cannot go idle, see WaitDeliverFunc): the
// window update is queued for the tunnel's send goroutine rather than
// written (and encrypted) on the caller's, whose stack would otherwise
// stay grown for the connection's life.
func (s *Stream) AdmitQueued() error { return s.st.AdmitQueued() }

// Reset ends the stream at once in both directions: the peer reads a
// reset (never a clean end), and what this side buffered is dropped.
func (s *Stream) Reset() error { return s.st.Reset() }

// Discard drops what the stream has buffered and all the peer sends on it
// from now on, without ending it: for a refused stream whose answer has
// been written, so the peer can still read that answer.
func (s *Stream) Discard() { s.st.Discard() }

// ID is the stream's number on its tunnel, for logs.
func (s *Stream) ID() uint32 { return s.st.StreamID() }

// Shrink releases the stream's receive buffer while it holds no data, so
// an idle stream costs no buffer (the relay calls it before waiting).
func (s *Stream) Shrink() { s.st.Shrink() }

// Buffered is how many bytes the stream holds that a read would return
// without waiting.
func (s *Stream) Buffered() int { return s.st.Buffered() }

// TunnelLost reports whether the tunnel carrying the stream has ended: the
// multiplexer reads a dead tunnel as a clean end of every stream.
func (s *Stream) TunnelLost() bool { return s.t.sess.IsClosed() }

// TunnelCloseReason is the reason this agent gave when it closed the
// stream's tunnel (Tunnel.CloseFor), or "".
func (s *Stream) TunnelCloseReason() string { return s.t.CloseReason() }

// Tunnel is the tunnel the stream travels on.
func (s *Stream) Tunnel() *Tunnel { return s.t }

// SetDeliver lets the tunnel's receive goroutine hand fn data for this
// stream while WaitDeliver waits, instead of buffering it and waking the
// reader: fn must not block and returns how many leading bytes of p it
// took (it may change bytes of p before that count). The relay passes a
// function that writes whole DATA frames to the plaintext socket when the
// socket takes them without waiting.
func (s *Stream) SetDeliver(fn func(p []byte) int) {
	s.st.SetDeliver(func(p []byte) int {
		n := fn(p)
		s.count(n, false)
		return n
	})
}

// WaitDeliver waits as Read(nil) does (until data is buffered, the stream
// ends or its read deadline passes), offering what arrives meanwhile to
// the SetDeliver function first.
func (s *Stream) WaitDeliver() error { return s.st.WaitDeliver() }

// WaitDeliverFunc is WaitDeliver for a reader that returns rather than
// wait: true means read now; false means *wake runs once when there is
// something to read (it must only start a goroutine), and the SetDeliver
// function gets what arrives meanwhile. An idle held connection then
// keeps no goroutine for this direction.
func (s *Stream) WaitDeliverFunc(wake *func()) bool { return s.st.WaitDeliverFunc(wake) }
