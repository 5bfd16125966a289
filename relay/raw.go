package relay

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"time"

	"github.com/postern-tunnel/postern/wire"
)

// Raw carries bytes between a plaintext TCP connection and a TLS
// connection to a peer that is not a Postern agent (mux = false): stunnel,
// ghostunnel, HAProxy or nginx with client certificates, or a TLS-capable
// application. There are no frames: a clean end is TLS close_notify (a
// half-close, via CloseWrite) on one side and a TCP FIN on the other; a TCP
// end without close_notify, or any error, resets the plaintext side.
//
// It returns nil when both directions ended cleanly and closes both
// connections before returning.
func Raw(ctx context.Context, plain net.Conn, peer *tls.Conn) (Stats, error) {
	type result struct {
		dir string
		n   int64
		err error
	}
	results := make(chan result, 2)
	copyDir := func(dir string, dst, src net.Conn) {
		n, err := copyPooled(dst, src)
		if err == nil {
			err = halfClose(dst)
		}
		results <- result{dir, n, err}
	}
	go copyDir("plain→peer", peer, plain)
	go copyDir("peer→plain", plain, peer)

	var stats Stats
	var failure error
	for range 2 {
		var r result
		select {
		case r = <-results:
		case <-ctx.Done():
			if failure == nil {
				failure = &AbortError{Code: wire.AbortShutdown, Err: stopCause(ctx)}
			}
			ResetConn(plain)
			peer.NetConn().Close()
			r = <-results
		}
		if r.dir == "plain→peer" {
			stats.Sent = r.n
		} else {
			stats.Received = r.n
		}
		if r.err != nil && failure == nil {
			failure = &AbortError{Dir: r.dir, Code: wire.AbortReset, Err: r.err}
			// Stop the other direction at once: reset the application and
			// drop the TLS connection without close_notify, so neither end
			// mistakes the cut for a clean close.
			ResetConn(plain)
			if tc, ok := peer.NetConn().(interface{ SetLinger(int) error }); ok {
				tc.SetLinger(0)
			}
			peer.NetConn().Close()
		}
	}
	if failure != nil {
		return stats, failure
	}
	peer.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
	peer.Close()
	plain.Close()
	return stats, nil
}

// copyPooled copies src to dst with a pooled buffer until src ends cleanly
// (nil) or fails. For a TLS source, an end without close_notify is an
// error (io.ErrUnexpectedEOF), as it should be.
func copyPooled(dst, src net.Conn) (int64, error) {
	buf := wire.GetBuffer()
	defer wire.PutBuffer(buf)
	var total int64
	for {
		n, err := src.Read(*buf)
		if n > 0 {
			if _, werr := dst.Write((*buf)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// halfClose ends the write side of c: TCP FIN, or TLS close_notify.
func halfClose(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
