//go:build linux || darwin || freebsd || netbsd || openbsd

package tunnel

import (
	"io"
	"net"
	"syscall"
)

// readPlain reads from c into a pooled buffer (after frameHeaderSize bytes
// of headroom), taking the buffer only once the socket has data: an idle
// connection waits in the poller holding no buffer. On success the caller
// owns *buf and must return it with putBuf.
//
// It costs no extra system call: the read that finds no data (EAGAIN) is
// the one the runtime would make anyway before parking.
func readPlain(c net.Conn) (buf *[]byte, n int, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return readPlainBuffered(c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return readPlainBuffered(c)
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = getBuf()
		}
		for {
			n, rerr = syscall.Read(int(fd), (*buf)[frameHeaderSize:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK {
			putBuf(buf)
			buf = nil
			return false
		}
		return true
	})
	switch {
	case err != nil:
	case rerr != nil:
		err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case n == 0:
		err = io.EOF
	}
	if n < 0 {
		n = 0
	}
	if err != nil && buf != nil {
		putBuf(buf)
		buf = nil
	}
	return buf, n, err
}
