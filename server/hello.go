package server

import (
	"net"
	"sync/atomic"
	"time"
)

// helloConn sits under TLS on an accepted connection and watches the
// client's first TLS record (its ClientHello): until the record is whole,
// reads have the short hello deadline; once it is, the read deadline
// becomes the handshake's, and done runs (the gate stops offering the
// connection for eviction). It also remembers whether the client sent
// anything, which tells a load balancer's probe from a failed handshake.
//
// Reads come from one goroutine at a time (TLS holds its input lock), and
// the fields are read by the handshake's goroutine only after the
// handshake returns.
type helloConn struct {
	net.Conn
	until time.Time // read deadline once the first record is whole
	done  func()
	// reading, if set, is set before the first read (the gate then stops
	// peeking into the socket for the hello).
	reading *atomic.Bool

	got    int     // bytes read so far, counted up to the first record's end
	header [5]byte // the first record's header
	seen   bool    // the first record is whole
}

func (c *helloConn) Read(p []byte) (int, error) {
	if c.reading != nil && !c.seen && c.got == 0 && !c.reading.Load() {
		// The first read: a hello already whole in the socket frees the
		// connection from eviction before it is read in pieces; otherwise
		// the gate stops looking into the socket, as the reads below take
		// the hello out of it.
		if helloWaiting(c.Conn) {
			c.done()
		}
		c.reading.Store(true)
	}
	n, err := c.Conn.Read(p)
	if !c.seen && n > 0 {
		c.count(p[:n])
	}
	return n, err
}

// count follows the first record: a 5-byte header whose last two bytes
// give the length of what follows.
func (c *helloConn) count(b []byte) {
	for c.got < len(c.header) && len(b) > 0 {
		c.header[c.got] = b[0]
		c.got++
		b = b[1:]
	}
	c.got += len(b)
	if c.got < len(c.header) {
		return
	}
	length := int(c.header[3])<<8 | int(c.header[4])
	if c.got >= len(c.header)+length {
		c.seen = true
		c.Conn.SetReadDeadline(c.until)
		c.done()
	}
}

// silent reports whether the client sent no byte.
func (c *helloConn) silent() bool { return c.got == 0 }

// CloseWrite and SetLinger pass through to the TCP connection, so a raw
// TLS relay can half-close and reset it.
func (c *helloConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *helloConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}
