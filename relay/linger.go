package relay

import (
	"io"
	"net"
	"sync/atomic"
)

// A process that dies (kill -9, an OOM kill, a crash) has its sockets
// closed by the kernel, with a FIN: to the application or the target, a
// transfer cut in the middle would look complete. So every plaintext
// connection is armed to close with a reset (SO_LINGER 0) from the moment
// it is accepted or dialed, and disarmed only on the clean path, after both
// directions have ended cleanly and just before the final close, so no
// acknowledged data is lost.

// ArmReset makes c's close, including the kernel's close when the process
// dies, a TCP reset. Stream and Raw disarm it when they end cleanly.
func ArmReset(c net.Conn) { setLinger(c, 0) }

// closeClean closes c after a clean end, with a FIN: the data it still has
// to send is delivered.
func closeClean(c net.Conn) error {
	setLinger(c, -1)
	return c.Close()
}

func setLinger(c net.Conn, sec int) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(sec)
	}
}

// WatchEOF wraps the TCP connection under a raw TLS connection (give the
// result to tls.Client or tls.Server) so that Raw can tell the peer's TLS
// close_notify from a bare TCP FIN. crypto/tls returns io.EOF for both: for
// close_notify, and when the TCP connection ends at a record boundary
// without one (conn.go, readRecordOrCCS: "we accept it if and only if at the
// record boundary"). In the second case, and only then, the TCP read below
// TLS has itself returned io.EOF: after close_notify crypto/tls reads no
// further. The wrapper records that.
func WatchEOF(c net.Conn) net.Conn { return &eofConn{Conn: c} }

// eofConn is a net.Conn that records whether a Read returned io.EOF. It
// keeps the TCP connection's half-close and linger.
type eofConn struct {
	net.Conn
	eof atomic.Bool
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

func (c *eofConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

func (c *eofConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
