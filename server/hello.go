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
	// reading, if set, tells the gate where the first read is (readNone,
	// readBusy, readDone).
	reading *atomic.Int32
	wake    func() // called once the first read is done

	// The first read takes what the socket holds into buf (pooled), and
	// later reads take the rest of it from stash first.
	buf   *[helloBufSize]byte
	stash []byte

	got    int     // bytes read so far, counted up to the first record's end
	header [5]byte // the first record's header
	seen   bool    // the first record is whole
}

func (c *helloConn) Read(p []byte) (int, error) {
	var n int
	var err error
	switch {
	case len(c.stash) > 0:
		// Counted when it was read from the socket.
		n = copy(p, c.stash)
		c.stash = c.stash[n:]
		if len(c.stash) == 0 {
			c.stash = nil
			helloBufs.Put(c.buf)
			c.buf = nil
		}
		return n, nil
	case c.reading != nil && c.reading.Load() == readNone:
		// The first read takes all the socket holds, so a whole hello
		// that waits there is counted at once (not between two reads);
		// readFirst tells the gate while it reads, and from then on the
		// gate stops looking into the socket. What did not fit in p
		// (TLS asks for about 512 bytes first, and a hello with a
		// post-quantum key share is 1.5–2 KiB) is counted too: it has
		// left the socket, so until it is counted the gate would take the
		// connection for silent and could evict it.
		n, err = c.readFirst(p)
		if !c.seen && n > 0 {
			c.count(p[:n])
		}
		if !c.seen && len(c.stash) > 0 {
			c.count(c.stash)
		}
		c.reading.Store(readDone)
		if c.wake != nil {
			c.wake() // the gate may have passed this connection over while it read
		}
		return n, err
	default:
		n, err = c.Conn.Read(p)
	}
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
