package wire

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// encodeFrame builds a frame by hand, independent of the code under test.
func encodeFrame(typ byte, payload []byte) []byte {
	n := len(payload)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, payload...)
}

// countingReader counts the non-empty reads that reach r.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	if len(p) > 0 {
		c.reads++
	}
	return c.r.Read(p)
}

// readers are the ways a stream can deliver bytes: all at once, a byte at a
// time, in halves, with EOF arriving together with the last bytes.
var readers = []struct {
	name string
	wrap func([]byte) io.Reader
}{
	{"bytes.Reader", func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{"one byte at a time", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	{"half reads", func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
	{"EOF with data", func(b []byte) io.Reader { return &eofWithData{b: b} }},
}

// eofWithData returns io.EOF together with the last bytes, as io.Reader
// allows. (iotest.DataErrReader spins on a zero-length read.)
type eofWithData struct{ b []byte }

func (r *eofWithData) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		return n, io.EOF
	}
	return n, nil
}

type wantFrame struct {
	typ     byte
	payload []byte
}

func TestFrameReaderDecodes(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB: more than a pooled buffer
	max := bytes.Repeat([]byte{0xa5}, MaxFramePayload)
	streams := []struct {
		name   string
		frames []wantFrame
	}{
		{"data close abort", []wantFrame{
			{FrameData, []byte("hello")},
			{FrameData, []byte(" world")},
			{FrameCloseWrite, nil},
			{FrameAbort, append([]byte{byte(AbortReset)}, "connection reset by target"...)},
		}},
		{"large payload between small ones", []wantFrame{
			{FrameData, []byte("a")},
			{FrameData, big},
			{FrameData, []byte("b")},
			{FrameData, big[:ChunkSize+1]},
			{FrameCloseWrite, nil},
		}},
		{"full chunks", []wantFrame{
			{FrameData, big[:ChunkSize]},
			{FrameData, big[ChunkSize : 2*ChunkSize]},
			{FrameData, big[:ChunkSize-1]},
			{FrameData, big[:3]},
		}},
		{"largest payload allowed", []wantFrame{
			{FrameData, max},
			{FrameCloseWrite, nil},
		}},
		{"nothing", nil},
	}
	for _, s := range streams {
		var wire []byte
		for _, f := range s.frames {
			wire = append(wire, encodeFrame(f.typ, f.payload)...)
		}
		for _, rd := range readers {
			t.Run(s.name+"/"+rd.name, func(t *testing.T) {
				fr := NewFrameReader(rd.wrap(wire))
				defer fr.Release()
				for i, want := range s.frames {
					f, err := fr.Next()
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					if f.Type != want.typ || !bytes.Equal(f.Payload, want.payload) {
						t.Fatalf("frame %d = type %d, %d bytes; want type %d, %d bytes",
							i, f.Type, len(f.Payload), want.typ, len(want.payload))
					}
				}
				if _, err := fr.Next(); err != io.EOF {
					t.Fatalf("after the last frame: %v, want io.EOF", err)
				}
				// iotest.OneByteReader answers a zero-length read with
				// 0, nil even at the end, so the reader takes a buffer
				// before it sees EOF; Release returns it.
				if (fr.buf != nil && rd.name != "one byte at a time") || fr.big != nil {
					t.Error("reader holds a buffer after the stream ended")
				}
			})
		}
	}
}

func TestFrameReaderManyFramesPerRead(t *testing.T) {
	var wire []byte
	for i := 0; i < 100; i++ {
		wire = append(wire, encodeFrame(FrameData, []byte(strings.Repeat("x", i+1)))...)
	}
	wire = append(wire, encodeFrame(FrameCloseWrite, nil)...)
	cr := &countingReader{r: bytes.NewReader(wire)}
	fr := NewFrameReader(cr)
	defer fr.Release()
	for i := 0; i < 100; i++ {
		f, err := fr.Next()
		if err != nil || f.Type != FrameData || len(f.Payload) != i+1 {
			t.Fatalf("frame %d: type %d, %d bytes, %v", i, f.Type, len(f.Payload), err)
		}
	}
	if f, err := fr.Next(); err != nil || f.Type != FrameCloseWrite {
		t.Fatalf("last frame: type %d, %v", f.Type, err)
	}
	if cr.reads > 1 {
		t.Errorf("%d reads for %d bytes of frames, want 1", cr.reads, len(wire))
	}
}

func TestAbortInfo(t *testing.T) {
	tests := []struct {
		name    string
		code    AbortCode
		reason  string
		want    string
		codeStr string
	}{
		{"reset", AbortReset, "target reset the connection", "target reset the connection", "connection reset"},
		{"no reason", AbortShutdown, "", "", "agent shutting down"},
		{"control bytes", AbortTimeout, "a\nb\x00c", "a?b?c", "timeout"},
		{"long reason cut", AbortTunnel, strings.Repeat("r", 400), strings.Repeat("r", 255), "tunnel failure"},
		{"unknown code", 99, "x", "x", "abort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := NewFrameReader(bytes.NewReader(AppendAbort(nil, tt.code, tt.reason)))
			defer fr.Release()
			f, err := fr.Next()
			if err != nil {
				t.Fatal(err)
			}
			code, reason := f.AbortInfo()
			if f.Type != FrameAbort || code != tt.code || reason != tt.want {
				t.Errorf("got type %d, code %d, reason %q; want ABORT, %d, %q", f.Type, code, reason, tt.code, tt.want)
			}
			if s := code.String(); s != tt.codeStr {
				t.Errorf("code.String() = %q, want %q", s, tt.codeStr)
			}
		})
	}
	if code, reason := (Frame{Type: FrameAbort}).AbortInfo(); code != 0 || reason != "" {
		t.Errorf("empty ABORT payload decodes as %d, %q", code, reason)
	}
}

func TestFrameReaderErrors(t *testing.T) {
	tests := []struct {
		name     string
		wire     []byte
		want     string
		protocol bool
		eof      error
	}{
		{"empty DATA", encodeFrame(FrameData, nil), "protocol error: DATA frame with 0 bytes (allowed 1..1048576)", true, nil},
		{"DATA over the limit", []byte{FrameData, 0x10, 0, 1}, "protocol error: DATA frame with 1048577 bytes (allowed 1..1048576)", true, nil},
		{"DATA at the largest length", []byte{FrameData, 0xff, 0xff, 0xff}, "protocol error: DATA frame with 16777215 bytes (allowed 1..1048576)", true, nil},
		{"CLOSE_WRITE with payload", encodeFrame(FrameCloseWrite, []byte("x")), "protocol error: CLOSE_WRITE frame with 1 bytes of payload", true, nil},
		{"empty ABORT", encodeFrame(FrameAbort, nil), "protocol error: ABORT frame with 0 bytes", true, nil},
		{"ABORT too long", encodeFrame(FrameAbort, make([]byte, 257)), "protocol error: ABORT frame with 257 bytes", true, nil},
		{"type 0", encodeFrame(0, []byte("x")), "protocol error: unknown frame type 0", true, nil},
		{"type 4", encodeFrame(4, nil), "protocol error: unknown frame type 4", true, nil},
		{"type 255", encodeFrame(255, []byte("x")), "protocol error: unknown frame type 255", true, nil},
		{"open request where a frame belongs", []byte{1, 1, 0, 4, 3, 'e', 'r', 'p'}, "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"partial header", []byte{FrameData, 0}, "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"header without payload", []byte{FrameData, 0, 0, 5}, "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"partial payload", encodeFrame(FrameData, []byte("hello"))[:6], "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"partial large payload", encodeFrame(FrameData, make([]byte, 200<<10))[:150<<10], "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"partial ABORT", encodeFrame(FrameAbort, []byte{1, 'x', 'y'})[:5], "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"error after a frame", append(encodeFrame(FrameData, []byte("ok")), 9, 0, 0, 0), "protocol error: unknown frame type 9", true, nil},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				fr := NewFrameReader(rd.wrap(tt.wire))
				defer fr.Release()
				var err error
				for i := 0; i < 10 && err == nil; i++ {
					_, err = fr.Next()
				}
				if err == nil || err.Error() != tt.want {
					t.Fatalf("error = %v, want %q", err, tt.want)
				}
				if errors.Is(err, ErrProtocol) != tt.protocol {
					t.Errorf("errors.Is(err, ErrProtocol) = %v, want %v", !tt.protocol, tt.protocol)
				}
				if tt.eof != nil && err != tt.eof {
					t.Errorf("error = %#v, want %#v", err, tt.eof)
				}
			})
		}
	}
}

// A read error other than EOF reaches the caller as it is.
func TestFrameReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	wire := encodeFrame(FrameData, []byte("hello"))
	fr := NewFrameReader(io.MultiReader(bytes.NewReader(wire[:6]), iotest.ErrReader(boom)))
	defer fr.Release()
	if _, err := fr.Next(); err != boom {
		t.Fatalf("error = %v, want %v", err, boom)
	}
}

// segments delivers one segment per Read, like a stream whose peer sends
// in bursts, and calls onWait on every zero-length read (the frame reader's
// wait for data).
type segments struct {
	segs   [][]byte
	onWait func()
}

func (s *segments) Read(p []byte) (int, error) {
	if len(s.segs) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		s.onWait()
		return 0, nil
	}
	n := copy(p, s.segs[0])
	if s.segs[0] = s.segs[0][n:]; len(s.segs[0]) == 0 {
		s.segs = s.segs[1:]
	}
	return n, nil
}

// The reader holds no pooled buffer while it waits for the next burst.
func TestFrameReaderReleasesWhenIdle(t *testing.T) {
	src := &segments{segs: [][]byte{
		append(encodeFrame(FrameData, []byte("one")), encodeFrame(FrameData, []byte("two"))...),
		encodeFrame(FrameData, make([]byte, 100<<10)),
		encodeFrame(FrameCloseWrite, nil),
	}}
	fr := NewFrameReader(src)
	defer fr.Release()
	waits, held := 0, 0
	src.onWait = func() {
		waits++
		if fr.buf != nil || fr.big != nil {
			held++
		}
	}
	for i := 0; i < 4; i++ {
		if _, err := fr.Next(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	if waits != 3 || held != 0 {
		t.Errorf("waited for data %d times holding a buffer %d times; want 3 and 0", waits, held)
	}
}

// burstStream is a stream whose peer sends in bursts, as a yamux stream
// holds them: each Read returns the next arrival of the current burst
// (what had arrived by then), Buffered says what the burst still holds,
// and a zero-length read (the reader's wait) moves to the next burst once
// this one is read. Shrink, as yamux's, releases the receive buffer only
// when the stream holds nothing; released records after which burst.
type burstStream struct {
	bursts   [][][]byte
	released []int
}

func (s *burstStream) Read(p []byte) (int, error) {
	if len(s.bursts) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		if len(s.bursts[0]) == 0 {
			s.bursts = s.bursts[1:]
		}
		return 0, nil
	}
	cur := s.bursts[0]
	if len(cur) == 0 {
		return 0, errors.New("read past a burst without waiting")
	}
	n := copy(p, cur[0])
	if cur[0] = cur[0][n:]; len(cur[0]) == 0 {
		s.bursts[0] = cur[1:]
	}
	return n, nil
}

func (s *burstStream) Buffered() int {
	n := 0
	if len(s.bursts) > 0 {
		for _, a := range s.bursts[0] {
			n += len(a)
		}
	}
	return n
}

func (s *burstStream) Shrink() {
	if s.Buffered() == 0 {
		s.released = append(s.released, len(s.bursts))
	}
}

// A bulk burst keeps the stream's receive buffer even when its last read
// was small: what counts is the burst since the stream was last empty, not
// the last refill of the reader's own buffer. An interactive burst releases
// it. Before, a bulk stream whose relay caught up with a read of under 32
// KiB released its buffer and grew a new one, by doubling, for the next.
func TestFrameReaderKeepsBulkStreamBuffer(t *testing.T) {
	bulk := [][]byte{
		append(encodeFrame(FrameData, make([]byte, 30000)), encodeFrame(FrameData, make([]byte, 30000))...),
		encodeFrame(FrameData, make([]byte, 20000)),
	}
	s := &burstStream{bursts: [][][]byte{
		bulk,
		{encodeFrame(FrameData, []byte("ping"))},
		{encodeFrame(FrameCloseWrite, nil)},
	}}
	fr := NewFrameReader(s)
	defer fr.Release()
	for i := 0; i < 5; i++ {
		if _, err := fr.Next(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	// A release records len(bursts) while the burst just read is still the
	// first: 3 after the bulk burst, 2 after the ping.
	if want := []int{2}; !slices.Equal(s.released, want) {
		t.Errorf("released the stream's buffer after bursts (bursts left) %v, want %v: only after the interactive one", s.released, want)
	}
}

// quietStream is a stream that had a bulk burst and then went quiet: it
// holds nothing, and reports each Shrink on shrunk.
type quietStream struct {
	burst  []byte
	shrunk chan struct{}
}

func (s *quietStream) Read(p []byte) (int, error) {
	if len(s.burst) == 0 {
		return 0, nil // the wait: this stream stays quiet
	}
	n := copy(p, s.burst)
	s.burst = s.burst[n:]
	return n, nil
}

func (s *quietStream) Buffered() int { return len(s.burst) }
func (s *quietStream) Shrink()       { s.shrunk <- struct{}{} }

// A bulk stream that goes quiet keeps its receive buffer only for a while:
// the reader releases it (Shrink) once the stream has been idle for the
// time set, so a connection that moved a file and then waits does not
// hold a buffer as large as the window.
func TestFrameReaderReleasesQuietBulkStream(t *testing.T) {
	s := &quietStream{burst: encodeFrame(FrameData, make([]byte, 60000)), shrunk: make(chan struct{}, 4)}
	fr := NewFrameReader(s)
	fr.SetKeepBulkBuffer(10 * time.Millisecond)
	defer fr.Release()
	if _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if !fr.Idle() {
		t.Fatal("the reader holds bytes after the only frame")
	}
	select {
	case <-s.shrunk:
		t.Fatal("released at once after a bulk burst; want it kept for a while")
	default:
	}
	select {
	case <-s.shrunk:
	case <-time.After(10 * time.Second):
		t.Fatal("a quiet bulk stream kept its buffer")
	}
}
