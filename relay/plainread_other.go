//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package relay

import "net"

// plainReader reads a plaintext connection into pooled buffers after
// wire.FrameHeaderSize bytes of headroom. On this platform it holds a buffer
// while it waits for data.
type plainReader struct{ c net.Conn }

func newPlainReader(c net.Conn) *plainReader { return &plainReader{c: c} }

// read returns the next chunk. On success the caller owns *buf.
func (p *plainReader) read() (*[]byte, int, error) { return readPlainBuffered(p.c) }
