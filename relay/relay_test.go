package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// The relay tests run Relay exactly as an agent does: the plaintext side is
// a real loopback TCP connection to an "application", the stream side a
// yamux stream of a session over a loopback TCP connection. Each test body
// runs with the stream opened by the yamux client and by the server, and
// with the two ends of the link swapped, so both directions of every
// behaviour are exercised (yamux's testConnTypes).

const testWait = 10 * time.Second // bound on every wait; never reached when things work

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		dialed.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() {
		dialed.Close()
		a.c.Close()
	})
	return dialed.(*net.TCPConn), a.c.(*net.TCPConn)
}

// testOptions are config's defaults for a tunnel.
func testOptions() tunnel.Options {
	var c config.Config
	c.SetDefaults()
	return tunnel.OptionsOf(c.Tunnel)
}

// sessionPair runs a tunnel over a loopback TCP connection (without TLS)
// with the settings an agent uses.
func sessionPair(t testing.TB) (client, server *tunnel.Tunnel) {
	t.Helper()
	c, s := tcpPair(t)
	client, err := tunnel.New(c, true, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	server, err = tunnel.New(s, false, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// streamPair opens a stream on opener and accepts it on acceptor.
func streamPair(t testing.TB, opener, acceptor *tunnel.Tunnel) (opened, accepted net.Conn) {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		s, err := acceptor.Accept()
		if err != nil {
			ch <- nil
			return
		}
		s.Admit() // as an agent does once it answered OK
		ch <- s
	}()
	o, err := opener.Open()
	if err != nil {
		t.Fatal(err)
	}
	o.Admit()
	select {
	case a := <-ch:
		if a == nil {
			t.Fatal("accept failed")
		}
		return o, a
	case <-time.After(testWait):
		t.Fatal("stream not accepted")
	}
	return nil, nil
}

type relayResult struct {
	stats Stats
	err   error
}

// side is one agent's end of a link: the application's connection, the
// agent's plaintext connection, the stream and the tunnel it is on.
type side struct {
	app     *net.TCPConn
	plain   *net.TCPConn
	stream  net.Conn
	session *tunnel.Tunnel
	result  chan relayResult
}

// link is two agents joined by one stream.
type link struct {
	left, right *side
}

// start runs Relay for s in the background.
func (s *side) start(ctx context.Context, before func() error) {
	s.result = make(chan relayResult, 1)
	go func() {
		st, err := Stream(ctx, s.plain, s.stream, before)
		s.result <- relayResult{st, err}
	}()
}

// wait returns Relay's result.
func (s *side) wait(t *testing.T) relayResult {
	t.Helper()
	select {
	case r := <-s.result:
		s.result <- r // keep it for the cleanup
		return r
	case <-time.After(testWait):
		t.Fatal("Relay did not return")
		return relayResult{}
	}
}

type variant struct {
	name         string
	clientOpens  bool // the yamux client opens the stream
	leftIsOpener bool // the left side holds the opened end
}

var variants = []variant{
	{"client-opens/left-opens", true, true},
	{"client-opens/right-opens", true, false},
	{"server-opens/left-opens", false, true},
	{"server-opens/right-opens", false, false},
}

// forEachVariant runs body with a fresh link per variant. Relays are not
// started; the body starts them.
func forEachVariant(t *testing.T, body func(t *testing.T, l *link)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			l := newLink(t, v)
			body(t, l)
		})
	}
}

func newLink(t *testing.T, v variant) *link {
	t.Helper()
	client, server := sessionPair(t)
	opener, acceptor := client, server
	if !v.clientOpens {
		opener, acceptor = server, client
	}
	opened, accepted := streamPair(t, opener, acceptor)
	l := &link{left: &side{}, right: &side{}}
	first, second := l.left, l.right
	if !v.leftIsOpener {
		first, second = l.right, l.left
	}
	first.stream, first.session = opened, opener
	second.stream, second.session = accepted, acceptor
	for _, s := range []*side{l.left, l.right} {
		s.app, s.plain = tcpPair(t)
	}
	t.Cleanup(func() {
		// Whatever happened, end both relays before the leak check.
		client.Close()
		server.Close()
		for _, s := range []*side{l.left, l.right} {
			s.app.Close()
			if s.result != nil {
				select {
				case <-s.result:
				case <-time.After(testWait):
					t.Error("Relay still running at the end of the test")
				}
			}
		}
	})
	return l
}

// encodeFrame builds a frame by hand, independent of the code under test.
func encodeFrame(typ byte, payload []byte) []byte {
	n := len(payload)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, payload...)
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll reads c to its end under the test's deadline.
func readAll(c *net.TCPConn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(testWait))
	return io.ReadAll(c)
}

// writeAndClose sends data and half-closes, in the background.
func writeAndClose(c *net.TCPConn, data []byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(testWait))
		if _, err := c.Write(data); err != nil {
			ch <- err
			return
		}
		ch <- c.CloseWrite()
	}()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testWait):
		t.Fatal("timed out")
	}
}

// readFull reads exactly len(want) bytes and compares.
func readFull(t *testing.T, c *net.TCPConn, want []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testWait))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// wantReset asserts that the application's connection was reset: its next
// read fails with ECONNRESET (after any bytes that were delivered).
func wantReset(t *testing.T, c *net.TCPConn) {
	t.Helper()
	_, err := readAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("application read: %v, want ECONNRESET", err)
	}
}

// wantResetOnWrite asserts that c was reset, for an application that has
// already read to EOF: a write fails (ECONNRESET, or EPIPE when the reset
// came after the peer's FIN). A write alone cannot tell a reset from a
// plain close: after the peer's FIN and close, the application's write
// draws a reset from the closed socket all the same. So where the kernel
// says (Linux), the reset must first arrive by itself: the connection's
// TCP state turns CLOSE, where after a FIN alone it stays CLOSE_WAIT.
func wantResetOnWrite(t *testing.T, c *net.TCPConn) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	if _, known := tcpClosed(c); known {
		for {
			if closed, _ := tcpClosed(c); closed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("application connection not reset within %s: its TCP state is not CLOSE (a FIN alone leaves CLOSE_WAIT)", testWait)
			}
			time.Sleep(time.Millisecond) // polling a condition with a deadline
		}
	}
	c.SetWriteDeadline(deadline)
	for time.Now().Before(deadline) {
		// The first write may be accepted before the reset arrives.
		_, err := c.Write([]byte("x"))
		if err == nil {
			runtime.Gosched()
			continue
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("application write: %v, want ECONNRESET or EPIPE", err)
		}
		return
	}
	t.Fatal("application connection was not reset")
}

func wantAbort(t *testing.T, r relayResult, code wire.AbortCode, byPeer bool) *AbortError {
	t.Helper()
	var ae *AbortError
	if !errors.As(r.err, &ae) {
		t.Fatalf("Relay returned %v (%T), want *AbortError", r.err, r.err)
	}
	if ae.Code != code || ae.ByPeer != byPeer {
		t.Fatalf("Relay returned %q: code %v, by peer %v; want code %v, by peer %v", ae, ae.Code, ae.ByPeer, code, byPeer)
	}
	return ae
}

// wantTunnelLost checks a relay whose tunnel died. It may notice in either
// direction first: a read sees the stream end without CLOSE_WRITE (by
// peer), or a stream write fails with yamux's ErrSessionShutdown, even one
// whose bytes were sent, when the session ends before the writer wakes.
func wantTunnelLost(t *testing.T, r relayResult) *AbortError {
	t.Helper()
	var ae *AbortError
	if !errors.As(r.err, &ae) || ae.Code != wire.AbortTunnel {
		t.Fatalf("Relay returned %v, want a tunnel failure", r.err)
	}
	return ae
}

func TestRelayBothDirectionsClean(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		ctx := context.Background()
		l.left.start(ctx, nil)
		l.right.start(ctx, nil)
		toRight := randomBytes(t, 3<<20+17)
		toLeft := randomBytes(t, 1<<20+5)
		wl := writeAndClose(l.left.app, toRight)
		wr := writeAndClose(l.right.app, toLeft)
		gotRight, errRight := readAll(l.right.app)
		gotLeft, errLeft := readAll(l.left.app)
		waitErr(t, wl)
		waitErr(t, wr)
		if errRight != nil || !bytes.Equal(gotRight, toRight) {
			t.Errorf("right application got %d bytes, %v; want %d bytes and EOF", len(gotRight), errRight, len(toRight))
		}
		if errLeft != nil || !bytes.Equal(gotLeft, toLeft) {
			t.Errorf("left application got %d bytes, %v; want %d bytes and EOF", len(gotLeft), errLeft, len(toLeft))
		}
		for _, s := range []struct {
			name           string
			side           *side
			sent, received int
		}{{"left", l.left, len(toRight), len(toLeft)}, {"right", l.right, len(toLeft), len(toRight)}} {
			r := s.side.wait(t)
			if r.err != nil {
				t.Errorf("%s Relay: %v", s.name, r.err)
			}
			if r.stats.Sent != int64(s.sent) || r.stats.Received != int64(s.received) {
				t.Errorf("%s stats %+v, want sent %d, received %d", s.name, r.stats, s.sent, s.received)
			}
		}
	})
}

func TestRelayEmptyTransfer(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.left.start(context.Background(), nil)
		l.right.start(context.Background(), nil)
		waitErr(t, writeAndClose(l.left.app, nil))
		waitErr(t, writeAndClose(l.right.app, nil))
		for _, s := range []*side{l.left, l.right} {
			if got, err := readAll(s.app); err != nil || len(got) != 0 {
				t.Errorf("application got %d bytes, %v; want a clean EOF", len(got), err)
			}
			if r := s.wait(t); r.err != nil {
				t.Errorf("Relay: %v", r.err)
			}
		}
	})
}

// One side ends early; the other direction keeps flowing until it ends.
func TestRelayHalfClose(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.left.start(context.Background(), nil)
		l.right.start(context.Background(), nil)
		request := []byte("GET /report HTTP/1.0\r\n\r\n")
		waitErr(t, writeAndClose(l.left.app, request))
		// The right application sees the request end (FIN) while its own
		// direction is still open.
		got, err := readAll(l.right.app)
		if err != nil || !bytes.Equal(got, request) {
			t.Fatalf("right application got %q, %v; want the request and EOF", got, err)
		}
		answer := randomBytes(t, 2<<20)
		for i := 0; i < len(answer); i += 256 << 10 {
			l.right.app.SetWriteDeadline(time.Now().Add(testWait))
			if _, err := l.right.app.Write(answer[i : i+256<<10]); err != nil {
				t.Fatalf("right application write after the half-close: %v", err)
			}
		}
		if err := l.right.app.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err = readAll(l.left.app)
		if err != nil || !bytes.Equal(got, answer) {
			t.Fatalf("left application got %d bytes, %v; want %d and EOF", len(got), err, len(answer))
		}
		for _, s := range []*side{l.left, l.right} {
			if r := s.wait(t); r.err != nil {
				t.Errorf("Relay: %v", r.err)
			}
		}
	})
}

// An application that resets its connection resets the one at the far end.
func TestRelayPlainReset(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.left.start(context.Background(), nil)
		l.right.start(context.Background(), nil)
		l.left.app.Write([]byte("partial"))
		readFull(t, l.right.app, []byte("partial"))
		l.left.app.SetLinger(0)
		l.left.app.Close()
		wantReset(t, l.right.app)
		ae := wantAbort(t, l.left.wait(t), wire.AbortReset, false)
		if ae.Dir != "plain→stream" || !errors.Is(ae, syscall.ECONNRESET) {
			t.Errorf("left Relay: %q (dir %q), want plain→stream wrapping ECONNRESET", ae, ae.Dir)
		}
		wantAbort(t, l.right.wait(t), wire.AbortReset, true)
	})
}

// A stream that ends without CLOSE_WRITE (the tunnel died) is a cut
// transfer: both applications see a reset, not a clean end.
func TestRelayStreamLost(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.left.start(context.Background(), nil)
		l.right.start(context.Background(), nil)
		l.left.app.Write([]byte("first half"))
		readFull(t, l.right.app, []byte("first half"))
		l.right.app.Write([]byte("answer"))
		readFull(t, l.left.app, []byte("answer"))
		l.left.session.Close()
		wantReset(t, l.right.app)
		wantReset(t, l.left.app)
		if ae := wantTunnelLost(t, l.right.wait(t)); ae.ByPeer && ae.Error() != "aborted by peer: stream ended without CLOSE_WRITE (tunnel lost or peer gone)" {
			t.Errorf("right Relay: %q", ae)
		}
		wantTunnelLost(t, l.left.wait(t))
	})
}

// The same after one direction ended cleanly: the other is still cut, and
// the application still sending is reset at once (not after the grace a
// peer gets to finish), whichever end's session goes first.
func TestRelayStreamLostAfterHalfClose(t *testing.T) {
	for _, closer := range []string{"sender's session", "receiver's session"} {
		t.Run(closer, func(t *testing.T) {
			forEachVariant(t, func(t *testing.T, l *link) {
				l.left.start(context.Background(), nil)
				l.right.start(context.Background(), nil)
				waitErr(t, writeAndClose(l.left.app, []byte("request")))
				if got, err := readAll(l.right.app); err != nil || string(got) != "request" {
					t.Fatalf("right application got %q, %v", got, err)
				}
				l.right.app.Write([]byte("part of the answer"))
				readFull(t, l.left.app, []byte("part of the answer"))
				// The right application is still sending, and now idle.
				if closer == "sender's session" {
					l.right.session.Close()
				} else {
					l.left.session.Close()
				}
				wantReset(t, l.left.app)
				wantTunnelLost(t, l.left.wait(t))
				if ae := wantTunnelLost(t, l.right.wait(t)); ae.ByPeer && ae.Error() != "aborted by peer: tunnel lost while this side was still sending" {
					t.Errorf("right Relay: %q", ae)
				}
				// The right application has read its EOF already; it sees
				// the reset when it writes.
				wantResetOnWrite(t, l.right.app)
			})
		})
	}
}

// A peer that breaks the protocol is told so and the application is reset.
func TestRelayDataAfterCloseWrite(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		// The left side is a misbehaving peer writing frames by hand.
		l.right.start(context.Background(), nil)
		var frames []byte
		frames = append(frames, encodeFrame(wire.FrameData, []byte("hello"))...)
		frames = append(frames, encodeFrame(wire.FrameCloseWrite, nil)...)
		frames = append(frames, encodeFrame(wire.FrameData, []byte("more"))...)
		if _, err := l.left.stream.Write(frames); err != nil {
			t.Fatal(err)
		}
		ae := wantAbort(t, l.right.wait(t), wire.AbortProtocol, false)
		if !errors.Is(ae, wire.ErrProtocol) || ae.Error() != "stream→plain: protocol error: DATA after CLOSE_WRITE" {
			t.Errorf("right Relay: %q, want the protocol error named", ae)
		}
		wantResetOnWrite(t, l.right.app)
		// The peer is told why.
		l.left.stream.SetReadDeadline(time.Now().Add(testWait))
		fr := wire.NewFrameReader(l.left.stream)
		defer fr.Release()
		f, err := fr.Next()
		if err != nil {
			t.Fatalf("peer read: %v, want an ABORT frame", err)
		}
		code, reason := f.AbortInfo()
		if f.Type != wire.FrameAbort || code != wire.AbortProtocol || reason != "protocol error: DATA after CLOSE_WRITE" {
			t.Errorf("peer got frame type %d, code %v, reason %q; want ABORT protocol error", f.Type, code, reason)
		}
		if _, err := fr.Next(); err != io.EOF {
			t.Errorf("after the ABORT: %v, want the stream closed", err)
		}
	})
}

func TestRelayMalformedFrame(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.right.start(context.Background(), nil)
		if _, err := l.left.stream.Write([]byte{wire.FrameData, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		wantReset(t, l.right.app)
		ae := wantAbort(t, l.right.wait(t), wire.AbortProtocol, false)
		if !errors.Is(ae, wire.ErrProtocol) {
			t.Errorf("right Relay: %q does not wrap wire.ErrProtocol", ae)
		}
	})
}

// Cancelling the context (the agent's shutdown deadline) cuts the transfer
// on both ends and says why, in the words of the cancel's cause.
func TestRelayShutdown(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		l.left.start(ctx, nil)
		l.right.start(context.Background(), nil)
		l.left.app.Write([]byte("ping"))
		readFull(t, l.right.app, []byte("ping"))
		cancel(errors.New("agent stopping: transfer cut at the shutdown deadline"))
		wantReset(t, l.left.app)
		wantReset(t, l.right.app)
		ae := wantAbort(t, l.left.wait(t), wire.AbortShutdown, false)
		if ae.Error() != "agent stopping: transfer cut at the shutdown deadline" {
			t.Errorf("left Relay: %q", ae)
		}
		ae = wantAbort(t, l.right.wait(t), wire.AbortShutdown, true)
		if ae.Error() != "aborted by peer: agent shutting down: agent stopping: transfer cut at the shutdown deadline" {
			t.Errorf("right Relay: %q", ae)
		}
	})
}

// The opener reads the peer's status in before; a refusal resets the
// application and is what Relay returns.
func TestRelayBeforeFails(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		refused := errors.New("refused by peer: not allowed for dns:partner-a.example.com")
		l.left.start(context.Background(), func() error {
			st, err := wire.ReadStatus(l.left.stream)
			if err != nil {
				return err
			}
			if st.Code != wire.StatusOK {
				return refused
			}
			return nil
		})
		if _, err := l.right.stream.Write(wire.AppendStatus(nil, wire.Status{Code: wire.StatusNotAllowed, Reason: "no"})); err != nil {
			t.Fatal(err)
		}
		wantReset(t, l.left.app)
		r := l.left.wait(t)
		wantAbort(t, r, wire.AbortProtocol, false)
		if !errors.Is(r.err, refused) {
			t.Errorf("Relay returned %v, want it to wrap the hook's error", r.err)
		}
		// The peer, which refused, sees the stream reset: it is gone on
		// both sides at once, holding no buffer.
		l.right.stream.SetReadDeadline(time.Now().Add(testWait))
		if _, err := io.ReadAll(l.right.stream); err == nil || !strings.Contains(err.Error(), "reset") {
			t.Errorf("peer read: %v, want a reset", err)
		}
	})
}

// The production opening: request, status in before, then data both ways.
func TestRelayBeforeSucceeds(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		open, err := wire.AppendOpen(nil, wire.OpenRequest{Service: "erp-db", Source: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.left.stream.Write(open); err != nil {
			t.Fatal(err)
		}
		l.left.start(context.Background(), func() error {
			st, err := wire.ReadStatus(l.left.stream)
			if err == nil && st.Code != wire.StatusOK {
				err = &wire.RefusedError{Status: st}
			}
			return err
		})
		// The client speaks first: its bytes travel before the status.
		l.left.app.Write([]byte("hello"))
		l.right.stream.SetReadDeadline(time.Now().Add(testWait))
		req, err := wire.ReadOpen(l.right.stream)
		if err != nil || req.Service != "erp-db" {
			t.Fatalf("wire.ReadOpen = %+v, %v", req, err)
		}
		l.right.stream.SetReadDeadline(time.Time{})
		if _, err := l.right.stream.Write(wire.AppendStatus(nil, wire.Status{Code: wire.StatusOK})); err != nil {
			t.Fatal(err)
		}
		l.right.start(context.Background(), nil)
		readFull(t, l.right.app, []byte("hello"))
		waitErr(t, writeAndClose(l.right.app, []byte("world")))
		if got, err := readAll(l.left.app); err != nil || string(got) != "world" {
			t.Fatalf("left application got %q, %v", got, err)
		}
		l.left.app.CloseWrite()
		if got, err := readAll(l.right.app); err != nil || len(got) != 0 {
			t.Fatalf("right application got %q, %v; want EOF", got, err)
		}
		for _, s := range []*side{l.left, l.right} {
			if r := s.wait(t); r.err != nil {
				t.Errorf("Relay: %v", r.err)
			}
		}
	})
}
