//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package tunnel

import "net"

// readPlain reads from c into a pooled buffer after frameHeaderSize bytes of
// headroom. On this platform the buffer is held while waiting for data.
func readPlain(c net.Conn) (buf *[]byte, n int, err error) {
	return readPlainBuffered(c)
}
