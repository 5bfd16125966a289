//go:build linux || darwin || freebsd || netbsd || openbsd

package relay

import (
	"io"
	"net"
	"syscall"

	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/wire"
)

// plainReader reads a plaintext connection into pooled buffers (after
// wire.FrameHeaderSize bytes of headroom), taking a buffer only once the socket
// has data: an idle connection waits in the poller holding none. It costs
// no extra system call (the read that finds no data is the one the runtime
// would make anyway before parking) and, after newPlainReader, no
// allocation per read.
//
// A plainReader is used by one goroutine.
type plainReader struct {
	c   net.Conn
	rc  syscall.RawConn // nil: the connection has no descriptor to poll
	fn  func(fd uintptr) bool
	buf *[]byte
	n   int
	err error
}

func newPlainReader(c net.Conn) *plainReader {
	p := &plainReader{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			p.rc = rc
		}
	}
	p.fn = p.tryRead // made once: a method value passed per read would allocate
	return p
}

// tryRead is called by the poller when the socket may have data; false
// means "none yet, wait".
func (p *plainReader) tryRead(fd uintptr) bool {
	if p.buf == nil {
		p.buf = wire.GetBuffer()
	}
	p.n, p.err = rawio.Read(fd, (*p.buf)[wire.FrameHeaderSize:])
	if p.err == syscall.EAGAIN || p.err == syscall.EWOULDBLOCK {
		wire.PutBuffer(p.buf)
		p.buf = nil
		return false
	}
	return true
}

// read returns the next chunk. On success the caller owns *buf and must
// return it with wire.PutBuffer.
func (p *plainReader) read() (buf *[]byte, n int, err error) {
	if p.rc == nil {
		return readPlainBuffered(p.c)
	}
	p.buf, p.n, p.err = nil, 0, nil
	err = p.rc.Read(p.fn)
	buf, n = p.buf, max(p.n, 0)
	p.buf = nil
	switch {
	case err != nil:
	case p.err != nil:
		err = &net.OpError{Op: "read", Net: p.c.LocalAddr().Network(), Source: p.c.LocalAddr(), Addr: p.c.RemoteAddr(), Err: p.err}
	case n == 0:
		err = io.EOF
	}
	if err != nil && buf != nil {
		wire.PutBuffer(buf)
		buf = nil
	}
	return buf, n, err
}
