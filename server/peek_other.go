//go:build !unix

package server

import (
	"net"
	"sync"
)

// helloWaiting cannot look into the socket here: a connection that has
// not been read from counts as silent.
func helloWaiting(net.Conn) bool { return false }

const helloBufSize = 4 << 10

var helloBufs = sync.Pool{New: func() any { return new([helloBufSize]byte) }}

// readFirst reads as usual here.
func (c *helloConn) readFirst(p []byte) (int, error) { return c.Conn.Read(p) }
