package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// FuzzStream runs a real relay (a loopback application connection on one
// side, a tunnel stream on the other) against a script decoded from the
// fuzz input: frames the peer writes by hand (DATA, CLOSE_WRITE, ABORT,
// malformed headers, a cut frame, the stream closed) and the application's
// actions (write, half-close, reset) plus the agent stopping, in any order.
// Every step waits until its effect is seen at the far end, so the outcome
// is determined by the script, and a small model predicts it:
//
//   - both CLOSE_WRITEs and nothing else wrong: Stream returns nil, the
//     application read exactly the DATA sent then EOF, the peer exactly
//     what the application wrote then CLOSE_WRITE;
//   - anything else: Stream returns an *AbortError with the model's code,
//     the application's connection is reset (never a clean EOF) after
//     exactly the DATA delivered so far, and the peer receives an ABORT
//     frame exactly when it has to be told (protocol error, application
//     reset, agent stopping).
func FuzzStream(f *testing.F) {
	// One tunnel per worker: a stream is cheap, a session is not.
	client, server := sessionPair(f)

	f.Add(script(0, opData("hello"), opCloseWrite, opAppWrite("world"), opAppCloseWrite))
	f.Add(script(1, opAppWrite("request"), opAppCloseWrite, opData("answer"), opCloseWrite))
	f.Add(script(2, opData("x"), opCloseWrite, opData("late")))
	f.Add(script(3, opData("part"), opAbort(wire.AbortReset, "reset by the target")))
	f.Add(script(0, opAppWrite("part"), opAppReset))
	f.Add(script(1, opData("part"), opRaw(0)))
	f.Add(script(2, opRaw(3), opData("never")))
	f.Add(script(3, opData("a"), opPeerClose(0)))
	f.Add(script(0, opData("a"), opPeerClose(1)))
	f.Add(script(1, opCloseWrite, opPeerClose(0), opAppWrite("after the peer closed"), opAppCloseWrite))
	f.Add(script(2, opAppWrite("q"), opAppCloseWrite, opAppReset, opData("lost")))
	// Regression: the relay half-closed toward the reset connection,
	// ignored the error and returned nil; the peer saw a complete transfer.
	f.Add(script(3, opAppWrite("q"), opAppCloseWrite, opAppReset, opCloseWrite))
	f.Add(script(0, opData("ping"), opCancel))
	f.Add(script(1, opCloseWrite, opCloseWrite, opAppCloseWrite))
	f.Add(script(2))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxInput {
			return // Go's minimiser is quadratic in the input's length
		}
		runScript(t, client, server, data)
	})
}

// Script operations. The encoding is the fuzz input: a variant byte, then
// operations, each a kind byte and its arguments.
const (
	kData          = iota // peer: DATA, length byte, payload
	kCloseWrite           // peer: CLOSE_WRITE
	kAbort                // peer: ABORT, code byte, length byte, reason
	kRaw                  // peer: a malformed frame header, selector byte
	kPeerClose            // peer: closes the stream (selector byte: after half a frame)
	kAppWrite             // application: writes, length byte, bytes
	kAppCloseWrite        // application: half-closes (FIN)
	kAppReset             // application: resets (RST)
	kCancel               // the agent stops (ctx cancelled)
	kinds
)

const (
	maxOps   = 24
	maxChunk = 32
	maxInput = 192
)

func script(variant byte, ops ...[]byte) []byte {
	return append([]byte{variant}, bytes.Join(ops, nil)...)
}

func opData(s string) []byte      { return append([]byte{kData, byte(len(s) - 1)}, s...) }
func opAppWrite(s string) []byte  { return append([]byte{kAppWrite, byte(len(s) - 1)}, s...) }
func opRaw(sel byte) []byte       { return []byte{kRaw, sel} }
func opPeerClose(sel byte) []byte { return []byte{kPeerClose, sel} }
func opAbort(c wire.AbortCode, reason string) []byte {
	return append([]byte{kAbort, byte(c), byte(len(reason))}, reason...)
}

var (
	opCloseWrite    = []byte{kCloseWrite}
	opAppCloseWrite = []byte{kAppCloseWrite}
	opAppReset      = []byte{kAppReset}
	opCancel        = []byte{kCancel}
)

// input hands out the fuzz bytes; past the end it gives zeros.
type input struct{ b []byte }

func (in *input) more() bool { return len(in.b) > 0 }

func (in *input) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

// chunk reads a length byte (1..maxChunk) and up to that many bytes; never
// empty.
func (in *input) chunk() []byte {
	n := 1 + int(in.byte())%maxChunk
	n = min(n, len(in.b))
	if n == 0 {
		return []byte{'x'}
	}
	c := in.b[:n]
	in.b = in.b[n:]
	return c
}

// model is what the script has done so far and what it implies.
type model struct {
	peerCW, appCW   bool // CLOSE_WRITE sent by the peer / FIN by the application
	appGone         bool // the application reset its connection
	peerClosed      bool // the peer closed its end of the stream
	clean           bool // both directions ended cleanly
	failed          bool // the relay must abort
	code            wire.AbortCode
	byPeer          bool
	notify          bool // the peer must receive an ABORT with code
	toApp, fromApp  []byte
	appGot, peerGot []byte
}

func (m *model) fail(code wire.AbortCode, byPeer, notify bool) {
	m.failed, m.code, m.byPeer, m.notify = true, code, byPeer, notify
}

func (m *model) String() string {
	switch {
	case m.clean:
		return "clean end"
	case m.failed:
		return fmt.Sprintf("abort %q (by peer %v, peer told %v)", m.code, m.byPeer, m.notify)
	}
	return "running"
}

func runScript(t *testing.T, client, server *tunnel.Tunnel, data []byte) {
	in := &input{b: data}
	v := in.byte()
	opener, acceptor := client, server
	if v&1 != 0 {
		opener, acceptor = server, client
	}
	opened, accepted := streamPair(t, opener, acceptor)
	relayEnd, peer := opened, accepted
	if v&2 != 0 {
		relayEnd, peer = accepted, opened
	}
	app, plain := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan relayResult, 1)
	go func() {
		st, err := Stream(ctx, plain, relayEnd, nil)
		result <- relayResult{st, err}
	}()
	var final *relayResult
	t.Cleanup(func() {
		// Whatever happened, end the relay and free the stream; a reset
		// leaves no TIME_WAIT behind for the next thousand inputs.
		cancel()
		peer.Close()
		app.SetLinger(0)
		app.Close()
		if final == nil {
			select {
			case <-result:
			case <-time.After(testWait):
				t.Error("Stream still running at the end of the input")
			}
		}
	})
	pr := wire.NewFrameReader(peer)
	defer pr.Release()

	var m model
	var trace []string
	step := func(format string, args ...any) { trace = append(trace, fmt.Sprintf(format, args...)) }
	defer func() {
		if t.Failed() {
			t.Logf("script: %s; model: %s", strings.Join(trace, ", "), &m)
		}
	}()

	for ops := 0; ops < maxOps && in.more() && !m.clean && !m.failed; ops++ {
		switch in.byte() % kinds {
		case kData:
			p := in.chunk()
			step("peer DATA %q", p)
			if m.peerClosed {
				continue
			}
			writePeer(t, peer, encodeFrame(wire.FrameData, p))
			switch {
			case m.peerCW:
				m.fail(wire.AbortProtocol, false, true)
			case m.appGone:
				// The relay finds out writing to the reset connection.
				m.fail(wire.AbortReset, false, true)
			default:
				m.toApp = append(m.toApp, p...)
				appRead(t, app, p)
				m.appGot = append(m.appGot, p...)
			}
		case kCloseWrite:
			step("peer CLOSE_WRITE")
			if m.peerClosed {
				continue
			}
			writePeer(t, peer, encodeFrame(wire.FrameCloseWrite, nil))
			m.peerCWSent(t, app)
		case kAbort:
			code := wire.AbortCode(in.byte())
			n := int(in.byte()) % 33
			n = min(n, len(in.b))
			reason := in.b[:n]
			in.b = in.b[n:]
			step("peer ABORT %d %q", code, reason)
			if m.peerClosed {
				continue
			}
			writePeer(t, peer, wire.AppendAbort(nil, code, string(reason)))
			m.fail(code, true, false)
		case kRaw:
			h := malformedHeader(in.byte())
			step("peer malformed header %x", h)
			if m.peerClosed {
				continue
			}
			writePeer(t, peer, h)
			m.fail(wire.AbortProtocol, false, true)
		case kPeerClose:
			cut := in.byte()&1 != 0
			step("peer closes the stream (cut frame %v)", cut)
			if m.peerClosed {
				continue
			}
			if cut {
				// A DATA header announcing 10 bytes, and 3 of them.
				writePeer(t, peer, []byte{wire.FrameData, 0, 0, 10, 'a', 'b', 'c'})
			}
			peer.Close()
			m.peerClosed = true
			if cut || !m.peerCW {
				m.fail(wire.AbortTunnel, true, false)
			}
		case kAppWrite:
			p := in.chunk()
			step("application writes %q", p)
			if m.appCW || m.appGone {
				continue
			}
			app.SetWriteDeadline(time.Now().Add(testWait))
			if _, err := app.Write(p); err != nil {
				t.Fatalf("application write: %v", err)
			}
			m.fromApp = append(m.fromApp, p...)
			got := peerReadData(t, peer, pr, len(p))
			if !bytes.Equal(got, p) {
				t.Fatalf("peer received %q, want %q", got, p)
			}
			m.peerGot = append(m.peerGot, got...)
		case kAppCloseWrite:
			step("application half-closes")
			if m.appCW || m.appGone {
				continue
			}
			m.appCloseWrite(t, app, peer, pr)
		case kAppReset:
			step("application resets")
			if m.appGone {
				continue
			}
			app.SetLinger(0)
			app.Close()
			m.appGone = true
			if !m.appCW {
				m.fail(wire.AbortReset, false, true)
			}
		case kCancel:
			step("agent stops")
			cancel()
			m.fail(wire.AbortShutdown, false, true)
		}
	}

	// The script ran out: finish the transfer cleanly, as far as the
	// application is still there to.
	if !m.clean && !m.failed {
		step("finish")
		if !m.appCW && !m.appGone {
			m.appCloseWrite(t, app, peer, pr)
		}
		if !m.clean && !m.peerCW {
			writePeer(t, peer, encodeFrame(wire.FrameCloseWrite, nil))
			m.peerCWSent(t, app)
		}
		if !m.clean && !m.failed {
			t.Fatalf("model: finished in state %+v", m)
		}
	}

	var r relayResult
	select {
	case r = <-result:
		final = &r
	case <-time.After(testWait):
		t.Fatalf("Stream did not return (model: %s)", &m)
	}
	if r.stats.Received != int64(len(m.appGot)) || r.stats.Sent != int64(len(m.peerGot)) {
		t.Errorf("stats %+v, want received %d, sent %d", r.stats, len(m.appGot), len(m.peerGot))
	}

	if m.clean {
		if r.err != nil {
			t.Fatalf("Stream returned %v after a clean end", r.err)
		}
		// The application has read its EOF (peerCWSent); nothing more.
		if !m.appGone {
			got, err := readAll(app)
			if err != nil || len(got) != 0 {
				t.Fatalf("application read %q, %v after EOF; want EOF again", got, err)
			}
		}
		wantPeerEnd(t, peer, pr, nil)
		if !bytes.Equal(m.appGot, m.toApp) || !bytes.Equal(m.peerGot, m.fromApp) {
			t.Fatal("model: a clean end with bytes missing")
		}
		return
	}

	var ae *AbortError
	if !errors.As(r.err, &ae) {
		t.Fatalf("Stream returned %v (%T), want *AbortError (model: %s)", r.err, r.err, &m)
	}
	if ae.Code != m.code || ae.ByPeer != m.byPeer {
		t.Fatalf("Stream returned %q: code %d, by peer %v; want code %d, by peer %v", ae, ae.Code, ae.ByPeer, m.code, m.byPeer)
	}
	if !m.appGone {
		if m.peerCW {
			// The application has read EOF already: its connection is
			// reset all the same, which a write shows.
			wantResetOnWrite(t, app)
		} else {
			got, err := readAll(app)
			if len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("application read %q, %v; want nothing more and ECONNRESET", got, err)
			}
		}
	}
	var told *wire.AbortCode
	if m.notify {
		told = &m.code
	}
	if !m.peerClosed {
		wantPeerEnd(t, peer, pr, told)
	}
}

// peerCWSent records the peer's CLOSE_WRITE and waits for the application
// to see it as EOF.
func (m *model) peerCWSent(t *testing.T, app *net.TCPConn) {
	t.Helper()
	if m.peerCW {
		return // a repeated CLOSE_WRITE changes nothing
	}
	m.peerCW = true
	if m.appGone {
		// The application reset its connection after its half-close: the
		// peer's direction cannot be delivered, and the peer must learn
		// that rather than see a complete transfer.
		m.fail(wire.AbortReset, false, true)
		return
	}
	got, err := readAll(app)
	if len(got) != 0 || err != nil {
		t.Fatalf("application read %q, %v after the peer's CLOSE_WRITE; want EOF", got, err)
	}
	if m.appCW {
		m.clean = true
	}
}

// appCloseWrite half-closes the application's side and waits for the peer
// to receive CLOSE_WRITE.
func (m *model) appCloseWrite(t *testing.T, app *net.TCPConn, peer net.Conn, pr *wire.FrameReader) {
	t.Helper()
	if err := app.CloseWrite(); err != nil {
		t.Fatalf("application half-close: %v", err)
	}
	m.appCW = true
	peer.SetReadDeadline(time.Now().Add(testWait))
	f, err := pr.Next()
	if err != nil || f.Type != wire.FrameCloseWrite {
		t.Fatalf("peer read frame type %d, %v; want CLOSE_WRITE", f.Type, err)
	}
	if m.peerCW {
		m.clean = true
	}
}

func writePeer(t *testing.T, peer net.Conn, b []byte) {
	t.Helper()
	peer.SetWriteDeadline(time.Now().Add(testWait))
	if _, err := peer.Write(b); err != nil {
		t.Fatalf("peer write: %v", err)
	}
}

func appRead(t *testing.T, app *net.TCPConn, want []byte) {
	t.Helper()
	app.SetReadDeadline(time.Now().Add(testWait))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(app, got); err != nil {
		t.Fatalf("application read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("application read %q, want %q", got, want)
	}
}

// peerReadData reads DATA frames until n bytes have arrived.
func peerReadData(t *testing.T, peer net.Conn, pr *wire.FrameReader, n int) []byte {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(testWait))
	var got []byte
	for len(got) < n {
		f, err := pr.Next()
		if err != nil {
			t.Fatalf("peer read after %d of %d bytes: %v", len(got), n, err)
		}
		if f.Type != wire.FrameData {
			t.Fatalf("peer got frame type %d, want DATA", f.Type)
		}
		got = append(got, f.Payload...)
	}
	return got
}

// wantPeerEnd reads what the peer receives after the relay ended: an ABORT
// with code when told is set, then the end of the stream; nothing else.
func wantPeerEnd(t *testing.T, peer net.Conn, pr *wire.FrameReader, told *wire.AbortCode) {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(testWait))
	f, err := pr.Next()
	if told != nil {
		if err != nil || f.Type != wire.FrameAbort {
			t.Fatalf("peer read frame type %d, %v; want ABORT %q", f.Type, err, *told)
		}
		if code, _ := f.AbortInfo(); code != *told {
			t.Fatalf("peer got ABORT %q, want %q", code, *told)
		}
		f, err = pr.Next()
	}
	// The stream ends with the relay's close (EOF) or, when it aborted
	// without telling the peer, its reset.
	if err != io.EOF && (err == nil || !strings.Contains(err.Error(), "connection reset")) {
		t.Fatalf("peer read frame type %d, %v; want the stream's end", f.Type, err)
	}
}

// malformedHeader returns a frame header the protocol forbids.
func malformedHeader(sel byte) []byte {
	switch sel % 5 {
	case 0:
		return []byte{wire.FrameData, 0, 0, 0} // empty DATA
	case 1:
		return []byte{wire.FrameData, 0xff, 0xff, 0xff} // over MaxFramePayload
	case 2:
		return []byte{wire.FrameCloseWrite, 0, 0, 1 + sel%7} // CLOSE_WRITE with payload
	case 3:
		return []byte{wire.FrameAbort, 0, 0, 0} // ABORT without a code
	}
	typ := sel
	if typ >= wire.FrameData && typ <= wire.FrameAbort {
		typ = 0
	}
	return []byte{typ, 0, 0, 1} // unknown type
}
