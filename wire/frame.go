package wire

import (
	"io"
	"sync"
	"time"
)

// Frame types. Every byte of a relayed connection travels in a frame, so the
// receiver can tell a clean end (CLOSE_WRITE) from a cut one (ABORT, or the
// stream ending without CLOSE_WRITE).
const (
	FrameData       = 1
	FrameCloseWrite = 2
	FrameAbort      = 3

	FrameHeaderSize = 4
	// MuxHeaderSize is the header the tunnel's multiplexer (yamux) puts
	// before each frame it carries; tunnel/ joins the two in one write.
	MuxHeaderSize = 12
	// MaxFramePayload bounds what a receiver accepts in one frame.
	MaxFramePayload = 1 << 20
	// ChunkSize is how much a sender reads from the plaintext side per
	// frame. With the frame header and yamux's 12-byte header a full frame
	// is exactly 64 KiB: four full 16 KiB TLS records, not four and a
	// 16-byte fifth that costs its own seal and system call.
	ChunkSize = 64<<10 - FrameHeaderSize - MuxHeaderSize
)

// frameHeader is type (1 byte) and payload length (3 bytes, big endian).
type frameHeader [FrameHeaderSize]byte

func (h frameHeader) Type() byte  { return h[0] }
func (h frameHeader) Length() int { return int(h[1])<<16 | int(h[2])<<8 | int(h[3]) }

func PutFrameHeader(b []byte, typ byte, n int) {
	b[0] = typ
	b[1] = byte(n >> 16)
	b[2] = byte(n >> 8)
	b[3] = byte(n)
}

// Abort codes say why a direction was cut.
type AbortCode uint8

const (
	AbortReset    AbortCode = 1 // the plaintext connection was reset or failed
	AbortTunnel   AbortCode = 2 // the tunnel or stream failed
	AbortTimeout  AbortCode = 3
	AbortProtocol AbortCode = 4
	AbortShutdown AbortCode = 5 // the agent stopped before the transfer ended
)

func (c AbortCode) String() string {
	switch c {
	case AbortReset:
		return "connection reset"
	case AbortTunnel:
		return "tunnel failure"
	case AbortTimeout:
		return "timeout"
	case AbortProtocol:
		return "protocol error"
	case AbortShutdown:
		return "agent shutting down"
	}
	return "abort"
}

// bufPool holds relay buffers: a frame header's headroom plus one chunk.
// A connection takes one only while bytes are moving.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, FrameHeaderSize+ChunkSize)
	return &b
}}

func GetBuffer() *[]byte  { return bufPool.Get().(*[]byte) }
func PutBuffer(b *[]byte) { bufPool.Put(b) }

// AppendAbort appends an ABORT frame.
func AppendAbort(b []byte, code AbortCode, reason string) []byte {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	n := 1 + len(reason)
	b = append(b, FrameAbort, byte(n>>16), byte(n>>8), byte(n), byte(code))
	return append(b, reason...)
}

// Frame is one decoded frame. Payload aliases the reader's buffer and is
// valid until the next call to Next.
type Frame struct {
	Type    byte
	Payload []byte
}

// AbortInfo decodes an ABORT frame's payload.
func (f Frame) AbortInfo() (AbortCode, string) {
	if len(f.Payload) == 0 {
		return 0, ""
	}
	return AbortCode(f.Payload[0]), printable(f.Payload[1:])
}

// FrameReader decodes frames from a stream with as few reads as possible:
// one Read may deliver several frames. It borrows a pooled buffer while
// data is buffered and gives it back when empty, so an idle stream holds
// none.
//
// A FrameReader is used by one goroutine.
type FrameReader struct {
	r     io.Reader
	buf   *[]byte
	big   []byte // for a payload larger than the pooled buffer
	start int
	end   int
	batch int // bytes read since the stream was last found empty (waitPoint)

	keepFor time.Duration // how long a bulk stream keeps its buffer when idle
	release *time.Timer   // Shrinks the stream keepFor after a bulk burst
}

// KeepBulkBuffer is how long a bulk stream that went idle keeps its
// receive buffer for the next burst, unless SetKeepBulkBuffer says
// otherwise.
const KeepBulkBuffer = time.Second

// shrinkBelow: a stream that moved less than this since it last waited is
// treated as interactive, and its yamux receive buffer is released while it
// waits again. A bulk stream keeps its buffer instead of reallocating it for
// every burst.
const shrinkBelow = 32 << 10

func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r, keepFor: KeepBulkBuffer} }

// SetKeepBulkBuffer sets how long a bulk stream that went idle keeps its
// receive buffer (KeepBulkBuffer by default).
func (fr *FrameReader) SetKeepBulkBuffer(d time.Duration) { fr.keepFor = d }

// Next returns the next frame. io.EOF means the stream ended at a frame
// boundary; io.ErrUnexpectedEOF that it ended inside a frame.
func (fr *FrameReader) Next() (Frame, error) {
	if err := fr.fill(FrameHeaderSize); err != nil {
		return Frame{}, err
	}
	b := *fr.buf
	var h frameHeader
	copy(h[:], b[fr.start:])
	n := h.Length()
	switch h.Type() {
	case FrameData:
		if n == 0 || n > MaxFramePayload {
			return Frame{}, protoErr("DATA frame with %d bytes (allowed 1..%d)", n, MaxFramePayload)
		}
	case FrameCloseWrite:
		if n != 0 {
			return Frame{}, protoErr("CLOSE_WRITE frame with %d bytes of payload", n)
		}
	case FrameAbort:
		if n == 0 || n > 1+maxReason {
			return Frame{}, protoErr("ABORT frame with %d bytes", n)
		}
	default:
		return Frame{}, protoErr("unknown frame type %d", h.Type())
	}
	fr.start += FrameHeaderSize
	if err := fr.fill(n); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	payload := fr.window()[:n]
	fr.start += n
	return Frame{Type: h.Type(), Payload: payload}, nil
}

func (fr *FrameReader) window() []byte {
	if fr.big != nil {
		return fr.big[fr.start:fr.end]
	}
	return (*fr.buf)[fr.start:fr.end]
}

// fill makes at least n bytes available at fr.start.
func (fr *FrameReader) fill(n int) error {
	if fr.end-fr.start >= n {
		return nil
	}
	if fr.end == fr.start {
		fr.reset()
		if fr.buf == nil {
			fr.waitPoint()
			// Wait for data without holding a buffer (a zero-length read
			// blocks until the stream has bytes or ends).
			if _, err := fr.r.Read(nil); err != nil {
				return err
			}
			fr.buf = GetBuffer()
		}
	}
	buf := *fr.buf
	if fr.big != nil {
		buf = fr.big
	}
	if n > len(buf) {
		// A payload larger than a pooled buffer (peers may send up to
		// MaxFramePayload): move to a private buffer for this frame.
		big := make([]byte, n)
		fr.end = copy(big, buf[fr.start:fr.end])
		fr.start = 0
		fr.big, buf = big, big
	} else if fr.start+n > len(buf) {
		fr.end = copy(buf, buf[fr.start:fr.end])
		fr.start = 0
	}
	for fr.end-fr.start < n {
		m, err := fr.r.Read(buf[fr.end:])
		fr.end += m
		fr.batch += m
		if err != nil {
			if fr.end-fr.start >= n {
				return nil
			}
			if err == io.EOF && fr.end-fr.start > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// reset drops an empty buffer back to the pool.
func (fr *FrameReader) reset() {
	fr.start, fr.end = 0, 0
	fr.big = nil
	if fr.buf != nil {
		PutBuffer(fr.buf)
		fr.buf = nil
	}
}

// Idle readies a reader that holds no unread bytes to wait for its stream
// elsewhere (the relay's receive direction returns rather than wait): it
// gives its buffer back and lets the stream release its receive buffer, as
// Next does before it waits. It returns false, changing nothing, when the
// reader still holds bytes Next has not returned.
func (fr *FrameReader) Idle() bool {
	if fr.end != fr.start {
		return false
	}
	fr.reset()
	fr.waitPoint()
	return true
}

// waitPoint runs where the reader has read everything it holds and may
// wait for its stream. A stream that still holds data (Buffered) will not
// make it wait: the burst goes on. Otherwise the burst ends here, and a
// small one (an interactive stream) lets the stream release its receive
// buffer (Shrink) while it waits. A bulk stream keeps it for keepFor,
// rather than grow a new one, by doubling, each time its reader catches
// up; if the stream is still empty then, it releases it, so a connection
// that moved a file and went quiet does not hold a buffer as large as the
// window. (Shrink takes the stream's own lock and releases only an empty
// buffer: a burst that comes first keeps it.) A reader whose stream
// cannot say what it holds counts every refill as a wait.
func (fr *FrameReader) waitPoint() {
	if b, ok := fr.r.(interface{ Buffered() int }); ok && b.Buffered() > 0 {
		return
	}
	sh, ok := fr.r.(interface{ Shrink() })
	switch {
	case !ok:
	case fr.batch < shrinkBelow:
		sh.Shrink() // an idle yamux stream then holds no receive buffer
	case fr.release == nil:
		fr.release = time.AfterFunc(fr.keepFor, sh.Shrink)
	default:
		fr.release.Reset(fr.keepFor)
	}
	fr.batch = 0
}

// Release returns any buffer; the reader must not be used afterwards.
func (fr *FrameReader) Release() {
	if fr.release != nil {
		fr.release.Stop()
	}
	fr.reset()
}
