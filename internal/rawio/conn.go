//go:build unix

package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a TCP connection whose Read and Write use Read and Write above,
// with the runtime's poller for the waits and the connection's deadlines.
// Everything else is the TCP connection's own.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu  sync.Mutex
	rp   []byte
	rn   int
	rerr error
	rfn  func(fd uintptr) bool

	wmu  sync.Mutex
	wp   []byte
	wn   int
	werr error
	wfn  func(fd uintptr) bool

	// cmu serializes the socket options and the half-close (control),
	// which run through cfn with their argument and result here: a
	// closure per call would allocate.
	cmu  sync.Mutex
	cop  int // controlLinger or controlShutdown
	carg int
	cerr error
	cfn  func(fd uintptr)
}

const (
	controlLinger = iota
	controlShutdown
)

// Wrap returns c as a *Conn when it is a TCP connection and raw system
// calls are supported here, and c unchanged otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || !Supported {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rw := &Conn{TCPConn: tc, rc: rc}
	rw.rfn, rw.wfn, rw.cfn = rw.tryRead, rw.tryWrite, rw.control // made once: a method value per call would allocate
	return rw
}

// SyscallConn returns the connection's raw connection, the one its reads
// and writes use: the TCP connection's own makes a new one each call.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.rfn)
	n := c.rn
	if err == nil {
		err = c.rerr
	}
	c.rp, c.rerr = nil, nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) tryRead(fd uintptr) bool {
	n, err := Read(fd, c.rp)
	if err == syscall.EAGAIN {
		return false
	}
	c.rn, c.rerr = n, err
	return true
}

func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.wfn)
	n := c.wn
	if err == nil {
		err = c.werr
	}
	c.wp, c.werr = nil, nil
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

func (c *Conn) tryWrite(fd uintptr) bool {
	for c.wn < len(c.wp) {
		n, err := Write(fd, c.wp[c.wn:])
		if err == syscall.EAGAIN {
			return false
		}
		if err != nil {
			c.werr = err
			return true
		}
		c.wn += n
	}
	return true
}

// opError dresses err as the TCP connection's own Read and Write do, so
// callers see the same errors (errors.Is with syscall errnos,
// os.ErrDeadlineExceeded, net.ErrClosed).
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // the poller's "raw-read"/"raw-write" wrapping
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// SetLinger is the TCP connection's SetLinger, made with SetLinger above:
// a relay arms every connection to close with a reset and disarms it after
// a clean end.
func (c *Conn) SetLinger(sec int) error {
	if err := c.runControl(controlLinger, sec); err != nil {
		return c.opError("set", err)
	}
	return nil
}

// CloseWrite is the TCP connection's CloseWrite (a FIN), made with
// Shutdown above.
func (c *Conn) CloseWrite() error {
	if err := c.runControl(controlShutdown, syscall.SHUT_WR); err != nil {
		return c.opError("close", err)
	}
	return nil
}

// runControl runs op with arg on the socket (see control).
func (c *Conn) runControl(op, arg int) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.cop, c.carg, c.cerr = op, arg, nil
	if err := c.rc.Control(c.cfn); err != nil {
		return err
	}
	return c.cerr
}

func (c *Conn) control(fd uintptr) {
	switch c.cop {
	case controlLinger:
		if err := SetLinger(fd, c.carg); err != nil {
			c.cerr = os.NewSyscallError("setsockopt", err)
		}
	case controlShutdown:
		if err := Shutdown(fd, c.carg); err != nil {
			c.cerr = os.NewSyscallError("shutdown", err)
		}
	}
}
