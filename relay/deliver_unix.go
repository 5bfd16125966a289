//go:build linux || darwin || freebsd || netbsd || openbsd

package relay

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/wire"
)

// directDelivery says whether this platform has direct delivery.
const directDelivery = true

// deliverer writes DATA frames to the plaintext socket on the tunnel's
// receive goroutine, while the relay's receive direction waits for data
// (tunnel.Stream's SetDeliver and WaitDeliver): a small answer then goes
// from the tunnel to the application without waking the relay goroutine.
// It takes whole DATA frames from the front of what arrives, as long as
// the socket takes their bytes without waiting; at the first frame of
// another type, an incomplete frame, or a socket that is full or failed,
// it stops and leaves the rest to the receive direction, which the
// stream then wakes. A frame the socket took in part is rewritten in
// place as a DATA frame of what is left. Everything else (CLOSE_WRITE,
// ABORT, errors, the relay's end) stays with the receive direction.
type deliverer struct {
	r      *relay
	rc     syscall.RawConn
	closed atomic.Bool // CLOSE_WRITE received: no more DATA is valid
	p      []byte      // the bytes writeFn writes
	n      int         // what writeFn wrote
	write  func(fd uintptr) bool
}

// deliverStream is a tunnel stream that can deliver on its receive
// goroutine (tunnel.Stream).
type deliverStream interface {
	SetDeliver(fn func(p []byte) int)
	WaitDeliver() error
}

// newDeliverer sets up direct delivery from r.stream to r.plain, or
// returns nil when either side cannot do it.
func newDeliverer(r *relay) *deliverer {
	ds, ok := r.stream.(deliverStream)
	if !ok {
		return nil
	}
	sc, ok := r.plain.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	d := &deliverer{r: r, rc: rc}
	d.write = d.writeFD // made once: a method value per write would allocate
	ds.SetDeliver(d.take)
	return d
}

// take is the deliver function: see deliverer.
func (d *deliverer) take(p []byte) int {
	if d.closed.Load() || d.r.stopping.Load() {
		return 0
	}
	off := 0
	for len(p)-off >= wire.FrameHeaderSize {
		typ := p[off]
		n := int(p[off+1])<<16 | int(p[off+2])<<8 | int(p[off+3])
		if typ != wire.FrameData || n == 0 || n > wire.MaxFramePayload || len(p)-off-wire.FrameHeaderSize < n {
			break
		}
		w := d.writePlain(p[off+wire.FrameHeaderSize : off+wire.FrameHeaderSize+n])
		d.r.received.Add(int64(w))
		if w == n {
			off += wire.FrameHeaderSize + n
			continue
		}
		if w > 0 {
			// What is left of the payload becomes a frame of its own,
			// its header just before it (over bytes already written).
			off += w
			wire.PutFrameHeader(p[off:], wire.FrameData, n-w)
		}
		break
	}
	return off
}

// writePlain writes b to the plaintext socket without waiting and returns
// how much it took: 0 when the socket is full or failed (the receive
// direction then meets the same condition with a blocking write).
func (d *deliverer) writePlain(b []byte) int {
	d.p, d.n = b, 0
	if err := d.rc.Write(d.write); err != nil {
		d.n = 0
	}
	d.p = nil
	return d.n
}

func (d *deliverer) writeFD(fd uintptr) bool {
	d.n, _ = rawio.Write(fd, d.p)
	return true // never wait: the caller is the tunnel's receive goroutine
}

// waitReader is the stream as the receive direction's FrameReader sees
// it: its wait for data (a zero-length read) lets the deliverer work.
type waitReader struct {
	s  net.Conn
	ds deliverStream
}

func (w waitReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, w.ds.WaitDeliver()
	}
	return w.s.Read(p)
}

// Shrink passes through (see wire.FrameReader).
func (w waitReader) Shrink() {
	if sh, ok := w.s.(interface{ Shrink() }); ok {
		sh.Shrink()
	}
}

// Buffered passes through (see wire.FrameReader).
func (w waitReader) Buffered() int {
	if b, ok := w.s.(interface{ Buffered() int }); ok {
		return b.Buffered()
	}
	return 0
}

// source is what the receive direction reads frames from.
func (d *deliverer) source(r *relay) io.Reader {
	if d == nil {
		return r.stream
	}
	return waitReader{s: r.stream, ds: r.stream.(deliverStream)}
}

// closeWrite records the peer's CLOSE_WRITE: DATA after it is the receive
// direction's to refuse.
func (d *deliverer) closeWrite() {
	if d != nil {
		d.closed.Store(true)
	}
}
