//go:build !unix

package rawio

import "net"

// Supported reports whether Read and Write make raw system calls here.
const Supported = false

// Wrap returns c unchanged: here every read and write is the connection's own.
func Wrap(c net.Conn) net.Conn { return c }
