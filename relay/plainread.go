package relay

import (
	"net"

	"github.com/postern-tunnel/postern/wire"
)

// readPlainBuffered is the portable readPlain: it holds a buffer while it
// waits. On success the caller owns *buf.
func readPlainBuffered(c net.Conn) (*[]byte, int, error) {
	buf := wire.GetBuffer()
	n, err := c.Read((*buf)[wire.FrameHeaderSize:])
	if n > 0 {
		// Data first; an error that came with it is seen on the next read.
		return buf, n, nil
	}
	wire.PutBuffer(buf)
	return nil, 0, err
}
