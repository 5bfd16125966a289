//go:build linux || darwin || freebsd || netbsd || openbsd

package relay

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/wire"
)

// parseData decodes a run of DATA frames built by hand, failing on
// anything else.
func parseData(t *testing.T, p []byte) []byte {
	t.Helper()
	var out []byte
	for len(p) > 0 {
		if len(p) < wire.FrameHeaderSize || p[0] != wire.FrameData {
			t.Fatalf("not a DATA frame: % x", p[:min(len(p), 8)])
		}
		n := int(p[1])<<16 | int(p[2])<<8 | int(p[3])
		if n == 0 || len(p) < wire.FrameHeaderSize+n {
			t.Fatalf("DATA frame of %d bytes with %d left", n, len(p)-wire.FrameHeaderSize)
		}
		out = append(out, p[wire.FrameHeaderSize:wire.FrameHeaderSize+n]...)
		p = p[wire.FrameHeaderSize+n:]
	}
	return out
}

// The deliverer writes whole DATA frames while the socket takes them;
// when it fills, what it leaves is valid frames of exactly the bytes not
// written (a frame taken in part is rewritten as the rest of itself); it
// stops at a frame that is not DATA, at an incomplete frame, and after
// CLOSE_WRITE.
func TestDelivererTakesWhatTheSocketTakes(t *testing.T) {
	app, plain := tcpPair(t)
	plain.SetWriteBuffer(4 << 10)
	app.SetReadBuffer(4 << 10)
	rc, err := plain.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	d := &deliverer{r: &relay{plain: plain}, rc: rc}
	d.write = d.writeFD

	var sent, left []byte
	full := false
	for i := 0; i < 10000 && !full; i++ {
		var p []byte
		var payloads []byte
		for j := 0; j < 3; j++ {
			payload := randomBytes(t, 300+97*j)
			payloads = append(payloads, payload...)
			p = append(p, encodeFrame(wire.FrameData, payload)...)
		}
		took := d.take(p)
		if took > len(p) {
			t.Fatalf("took %d of %d bytes", took, len(p))
		}
		rest := parseData(t, p[took:])
		written := payloads[:len(payloads)-len(rest)]
		if !bytes.Equal(rest, payloads[len(written):]) {
			t.Fatal("what was left is not the unwritten end of the payloads")
		}
		sent = append(sent, written...)
		if took < len(p) {
			full, left = true, rest
		}
	}
	if !full {
		t.Fatal("the socket never filled")
	}
	if got := d.r.received.Load(); got != int64(len(sent)) {
		t.Errorf("received counts %d bytes, %d were written", got, len(sent))
	}
	app.SetReadDeadline(time.Now().Add(testWait))
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(app, got); err != nil || !bytes.Equal(got, sent) {
		t.Fatalf("application read %d bytes (%v), not the %d written", len(got), err, len(sent))
	}
	if len(left) == 0 {
		t.Error("a full socket left nothing")
	}

	// Not DATA, incomplete, after CLOSE_WRITE: nothing, or only what comes before.
	data := encodeFrame(wire.FrameData, []byte("ab"))
	for _, c := range []struct {
		name string
		p    []byte
		want int
	}{
		{"close-write after data", append(append([]byte{}, data...), encodeFrame(wire.FrameCloseWrite, nil)...), len(data)},
		{"abort", encodeFrame(wire.FrameAbort, []byte{1}), 0},
		{"incomplete", data[:len(data)-1], 0},
		{"header only", data[:3], 0},
	} {
		if got := d.take(c.p); got != c.want {
			t.Errorf("%s: took %d, want %d", c.name, got, c.want)
		}
	}
	d.closeWrite()
	if got := d.take(data); got != 0 {
		t.Errorf("after CLOSE_WRITE: took %d, want 0", got)
	}
}

// Small frames through a relay to an application that reads only once
// its socket is full arrive intact, whichever way each frame went
// (delivered on the tunnel's goroutine, in part, or by the relay).
func TestRelaySmallFramesToSlowApplication(t *testing.T) {
	forEachVariant(t, func(t *testing.T, l *link) {
		l.right.app.SetReadBuffer(32 << 10)
		l.right.plain.SetWriteBuffer(32 << 10)
		l.left.start(t.Context(), nil)
		l.right.start(t.Context(), nil)
		data := randomBytes(t, 4<<20)
		done := make(chan error, 1)
		oneMiB := make(chan struct{})
		go func() {
			l.left.app.SetWriteDeadline(time.Now().Add(testWait))
			for off := 0; off < len(data); off += 700 {
				if off >= 1<<20 && off < 1<<20+700 {
					close(oneMiB)
				}
				if _, err := l.left.app.Write(data[off:min(off+700, len(data))]); err != nil {
					done <- err
					return
				}
			}
			done <- l.left.app.CloseWrite()
		}()
		// The application starts reading once a megabyte has been sent,
		// which fills its socket first.
		l.right.app.CloseWrite()
		select {
		case <-oneMiB:
		case err := <-done:
			select {
			case <-oneMiB: // the whole upload fitted in the buffers on the way
			default:
				t.Fatalf("sender ended before a megabyte: %v", err)
			}
			done <- err
		case <-time.After(testWait):
			t.Fatal("a megabyte was not sent")
		}
		got, err := readAll(l.right.app)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("application received %d bytes, not the %d sent", len(got), len(data))
		}
		waitErr(t, done)
		if r := l.left.wait(t); r.err != nil {
			t.Fatal(r.err)
		}
		if r := l.right.wait(t); r.err != nil {
			t.Fatal(r.err)
		}
	})
}
