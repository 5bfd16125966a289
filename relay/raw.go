package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/wire"
)

// Raw carries bytes between a plaintext TCP connection and a TLS
// connection to a peer that is not a Postern agent (mux = false): stunnel,
// ghostunnel, HAProxy or nginx with client certificates, or a TLS-capable
// application. There are no frames: a clean end is TLS close_notify (a
// half-close, via CloseWrite) on one side and a TCP FIN on the other; a TCP
// end without close_notify, or any error, resets the plaintext side. peer
// must run over a connection wrapped by WatchEOF: without it a TCP end
// cannot be told from close_notify, and counts as a cut.
//
// Both connections are armed to close with a reset (ArmReset) until both
// directions have ended cleanly. It returns nil when they did, and closes
// both connections before returning.
func Raw(ctx context.Context, plain net.Conn, peer *tls.Conn) (Stats, error) {
	plain = rawio.Wrap(plain) // see internal/rawio
	ArmReset(plain)
	ArmReset(peer.NetConn())
	type result struct {
		dir string
		n   int64
		err error
	}
	results := make(chan result, 2)
	var plainShut atomic.Bool // this side sent its FIN to plain
	copyDir := func(dir string, dst, src net.Conn) {
		n, err := copyPooled(dst, src, &plainShut)
		if err == nil && dir == "peer→plain" && !closeNotified(peer) {
			err = errNoCloseNotify
		}
		if err == nil {
			if dir == "peer→plain" {
				plainShut.Store(true) // before the FIN: see endedByReset
			}
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
	setLinger(peer.NetConn(), -1)
	peer.Close()
	closeClean(plain)
	return stats, nil
}

// errNoCloseNotify is how a raw TLS peer's cut reads: its TCP connection
// ended without close_notify.
var errNoCloseNotify = errors.New("the peer's TLS connection ended without close_notify (peer crashed, killed or cut off)")

// closeNotified reports whether peer, which read io.EOF, ended with the
// peer's close_notify rather than a bare TCP end (see WatchEOF).
func closeNotified(peer *tls.Conn) bool {
	w, ok := peer.NetConn().(*eofConn)
	return ok && !w.eof.Load()
}

// copyPooled copies src to dst with a pooled buffer until src ends cleanly
// (nil) or fails. For a TLS source, io.EOF is close_notify or a TCP end at a
// record boundary (see closeNotified); a TCP end inside a record is an error
// (io.ErrUnexpectedEOF).
func copyPooled(dst, src net.Conn, plainShut *atomic.Bool) (int64, error) {
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
		if err == io.EOF && endedByReset(src, plainShut) {
			return total, syscall.ECONNRESET // the reset a concurrent write reported
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
