package tunnel

import "net"

// readPlainBuffered is the portable readPlain: it holds a buffer while it
// waits. On success the caller owns *buf.
func readPlainBuffered(c net.Conn) (*[]byte, int, error) {
	buf := getBuf()
	n, err := c.Read((*buf)[frameHeaderSize:])
	if n > 0 {
		// Data first; an error that came with it is seen on the next read.
		return buf, n, nil
	}
	putBuf(buf)
	return nil, 0, err
}
