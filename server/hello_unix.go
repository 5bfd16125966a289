//go:build unix

package server

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// helloBufSize holds a usual ClientHello (1–2 KiB) whole.
const helloBufSize = 4 << 10

var helloBufs = sync.Pool{New: func() any { return new([helloBufSize]byte) }}

// readFirst waits until the socket is readable and reads all it holds (up
// to helloBufSize) at once, taking a pooled buffer only once there is
// something to read: a silent connection holds none while it waits. What
// does not fit in p is kept in stash for the next reads. Connections that
// are not sockets are read as usual.
func (c *helloConn) readFirst(p []byte) (int, error) {
	rc := rawConn(c.Conn)
	if rc == nil {
		return c.Conn.Read(p)
	}
	var (
		buf  *[helloBufSize]byte
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		buf = helloBufs.Get().(*[helloBufSize]byte)
		c.reading.Store(readBusy) // the gate passes this connection over until the caller has counted what was read
		n, rerr = syscall.Read(int(fd), buf[:])
		if errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EINTR) {
			c.reading.Store(readNone)
			if c.wake != nil {
				c.wake() // the gate may have passed this connection over while it read
			}
			helloBufs.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	switch {
	case err == nil && rerr != nil:
		err = os.NewSyscallError("read", rerr)
	case err == nil && n <= 0:
		helloBufs.Put(buf)
		return 0, io.EOF
	}
	if err != nil {
		if buf != nil {
			helloBufs.Put(buf)
		}
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	m := copy(p, buf[:n])
	if m == n {
		helloBufs.Put(buf)
		return m, nil
	}
	c.buf, c.stash = buf, buf[m:n]
	return m, nil
}
