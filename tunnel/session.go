package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/wire"
)

// Options are the multiplexing settings of a tunnel. Every field must be
// set: the values come from the config's [tunnel] section, where their
// defaults live.
type Options struct {
	StreamWindow      uint32        // per-stream receive window, bytes
	KeepaliveInterval time.Duration // ping period
	KeepaliveTimeout  time.Duration // time for a ping's answer before the tunnel is declared dead
	MaxStreams        int           // streams the peer may have open at once
	WriteTimeout      time.Duration // how long a queued write may wait on a slow, full link
	TunnelBuffer      int64         // received, unread bytes one tunnel may hold (0: no bound)
	Buffer            *Budget       // shared by every tunnel made with these options (nil: no bound)
	Go                func(func())  // starts the goroutine that takes a stream the peer opened to Serve (nil: a goroutine of its own)
}

// OptionsOf takes a tunnel's settings from the config's [tunnel] section.
func OptionsOf(c config.Tunnel) Options {
	return Options{
		StreamWindow:      uint32(c.StreamWindow),
		KeepaliveInterval: c.KeepaliveInterval.D(),
		KeepaliveTimeout:  c.KeepaliveTimeout.D(),
		MaxStreams:        c.MaxStreams,
		WriteTimeout:      c.WriteTimeout.D(),
		TunnelBuffer:      int64(c.MaxTunnelBuffered),
		Buffer:            NewBudget(int64(c.MaxBuffered)),
	}
}

// Budget bounds the bytes that the streams of several tunnels hold
// received and not yet read (an agent's [tunnel] max_buffered). A data
// frame that would exceed it resets its stream instead of being buffered.
type Budget struct{ b *yamux.Budget }

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{b: yamux.NewBudget(limit, nil)} }

// Used is the number of bytes held under the budget now.
func (b *Budget) Used() int64 { return b.b.Used() }

// streamCloseTimeout is how long a stream this side closed waits for the
// peer's close before the multiplexer resets it: 0, never. Postern's own
// protocol (CLOSE_WRITE, ABORT) decides when a stream ends, and a stream
// this side closed stays counted in max_streams until the peer closes it
// too, so a slow reader receives a complete transfer however long it
// takes. Tests set it to show what a timer would cut.
var streamCloseTimeout time.Duration

// startStreamWindow is the window an admitted stream starts with (see
// yamuxConfig): eight bulk streams through one tunnel moved 6.3–7.1
// Gbit/s with 1 MiB windows against 5.9–6.4 with 16 MiB, and one stream
// the same. Tests set it to stream_window to buffer as much as that.
var startStreamWindow uint32 = 1 << 20

func (o Options) yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	// yamux refuses a window below its 256 KiB minimum.
	c.MaxStreamWindowSize = max(o.StreamWindow, 256<<10)
	c.EnableKeepAlive = true
	c.KeepAliveInterval = o.KeepaliveInterval
	// A ping waits keepalive_timeout for its answer (pings and answers go
	// ahead of stream data); any other queued write may wait write_timeout
	// on a slow, full link before the tunnel is declared dead.
	c.KeepAliveTimeout = o.KeepaliveTimeout
	// Ping only a peer silent for an interval: its own pings and any data
	// show it is alive, so a side that hears the peer's pings sends none,
	// and an idle tunnel carries half the pings (a hub with thousands of
	// idle partners spends its idle CPU on them).
	c.KeepAliveOnlyWhenSilent = true
	c.ConnectionWriteTimeout = max(o.WriteTimeout, o.KeepaliveTimeout)
	// A stream's window grows past 256 KiB only once it is admitted: the
	// open request was answered OK (see Stream.Admit). It then starts at
	// startStreamWindow and doubles, up to stream_window, while the peer
	// fills half of it within two of the tunnel's round trips: a stream
	// on a long link gets the window the link needs, while streams whose
	// relays fall behind on a short one hold a megabyte each, not
	// stream_window.
	c.AdmitStreams = true
	c.StartStreamWindowSize = startStreamWindow // yamux caps it at MaxStreamWindowSize
	// Retire sends GoAway; a stream the peer opened before it saw it is
	// still served, not reset (the retiring tunnel closes once its streams
	// have ended).
	c.AcceptAfterGoAway = true
	// The accept loop never blocks (each stream is handed to its own
	// goroutine), so a generous backlog only absorbs bursts; every stream
	// waiting in it counts against the tunnel's buffer budget. The backlog
	// grows with use: an idle tunnel holds none of it.
	c.AcceptBacklog = 1024
	c.Go = o.Go
	// Opening a stream waits for the peer's ACK; a peer that never answers
	// is a dead tunnel.
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = streamCloseTimeout
	// A frame is written on the goroutine that sends it when nothing is
	// queued (no hand-off to the send loop per request); a write to the
	// connection stuck past the write timeout ends the tunnel.
	c.DirectWrite = true
	return c
}

// ErrNoAnswer is returned by Confirm when the peer completed the TLS
// handshake but did not answer the first ping in time.
var ErrNoAnswer = errors.New("no answer from peer")

// ErrRetiring is returned by Open on a tunnel that takes no new streams
// because this side or the peer retired it.
var ErrRetiring = errors.New("tunnel is retiring: it takes no new streams")

// Tunnel is one established connection to a peer agent carrying
// multiplexed streams (a yamux session). It is safe for concurrent use.
type Tunnel struct {
	// Name is the [[client]] name for dialed tunnels, or "" for accepted ones.
	Name string
	// Peer is the verified peer leaf certificate (nil over a connection
	// without TLS, which only tests use).
	Peer *x509.Certificate
	// Chains are Peer's verified chains, leaf first, each ending at a CA of
	// the local bundle: what identity patterns that name a CA match.
	Chains [][]*x509.Certificate

	sess        *yamux.Session
	buffer      *yamux.Budget // this tunnel's share of opts.Buffer
	conn        *tunnelConn
	ylog        *yamuxLog
	closeReason atomic.Pointer[string]
	retiring    atomic.Bool // Retire was called, or the peer refused a new stream
	stats       counters    // since, bytes each way (stats.go)
}

// New runs the multiplexer over an established connection: in production
// a verified *tls.Conn. The dialer is the yamux client.
func New(conn net.Conn, isClient bool, opts Options) (*Tunnel, error) {
	tc := &tunnelConn{Conn: conn}
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		if b, ok := nc.NetConn().(*batchConn); ok {
			b.enable()
			tc.batch = b
		}
	}
	cfg := opts.yamuxConfig()
	if opts.TunnelBuffer > 0 || opts.Buffer != nil {
		var parent *yamux.Budget
		if opts.Buffer != nil {
			parent = opts.Buffer.b
		}
		limit := opts.TunnelBuffer
		if limit <= 0 {
			limit = 1<<63 - 1
		}
		cfg.Buffer = yamux.NewBudget(limit, parent)
	}
	if _, ok := conn.(*tls.Conn); ok {
		// TLS buffers a whole decrypted record: the multiplexer's own
		// read buffer is lent to it only while it holds a frame (for
		// direct delivery), so an idle tunnel holds none.
		cfg.ReadBufferSize = yamux.LendReadBuffer
	}
	ylog := &yamuxLog{}
	cfg.LogOutput = ylog
	var (
		sess *yamux.Session
		err  error
	)
	if isClient {
		sess, err = yamux.Client(tc, cfg)
	} else {
		sess, err = yamux.Server(tc, cfg)
	}
	if err != nil {
		return nil, err
	}
	t := &Tunnel{sess: sess, buffer: cfg.Buffer, conn: tc, ylog: ylog}
	t.stats.since = time.Now()
	cs := t.ConnectionState()
	if len(cs.PeerCertificates) > 0 {
		t.Peer = cs.PeerCertificates[0]
	}
	t.Chains = cs.VerifiedChains
	return t, nil
}

// Open opens a stream to the peer. It fails with ErrRetiring once the
// tunnel was retired by either side.
func (t *Tunnel) Open() (*Stream, error) {
	if t.retiring.Load() {
		return nil, ErrRetiring
	}
	st, err := t.sess.OpenStream()
	if err != nil {
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			t.retiring.Store(true)
			return nil, ErrRetiring
		}
		return nil, err
	}
	return &Stream{st: st, t: t}, nil
}

// Accept waits for the peer's next stream. It returns an error once the
// tunnel has ended.
func (t *Tunnel) Accept() (*Stream, error) {
	st, err := t.sess.AcceptStream()
	if err != nil {
		return nil, err
	}
	return &Stream{st: st, t: t}, nil
}

// Serve hands each stream the peer opens to handle, on a goroutine of its
// own, without a goroutine waiting for them while the tunnel is idle (a
// hub holds thousands of idle tunnels). A stream that cannot be accepted
// ends the tunnel. Accept must not be used after Serve.
func (t *Tunnel) Serve(handle func(*Stream)) {
	t.sess.Serve(func(st *yamux.Stream, err error) {
		if err != nil {
			if !t.Closed() {
				t.CloseFor(fmt.Sprintf("accept stream: %v", err))
			}
			return
		}
		handle(&Stream{st: st, t: t})
	})
}

// AfterClose runs f on a goroutine of its own once the tunnel has ended
// (at once if it has already).
func (t *Tunnel) AfterClose(f func()) { t.sess.OnClose(f) }

// Retire stops the tunnel taking new streams in both directions (the peer
// is told to open none); streams already open carry on. Close it once
// Streams is 0 (make-before-break renewal and failback).
func (t *Tunnel) Retire() {
	t.retiring.Store(true)
	t.sess.GoAway()
}

// Retiring reports whether the tunnel takes no new streams: Retire was
// called, or the peer refused a stream because it retired the tunnel.
func (t *Tunnel) Retiring() bool { return t.retiring.Load() }

// Buffered is the number of bytes the tunnel's streams hold received and
// not yet read.
func (t *Tunnel) Buffered() int64 { return t.buffer.Used() }

// Streams is the number of streams open on the tunnel, in either
// direction, until both ends have closed them (or one reset them).
func (t *Tunnel) Streams() int { return t.sess.NumStreams() }

// Closed reports whether the tunnel has ended.
func (t *Tunnel) Closed() bool { return t.sess.IsClosed() }

// RemoteAddr is the peer's network address.
func (t *Tunnel) RemoteAddr() net.Addr { return t.conn.RemoteAddr() }

// LocalAddr is this side's network address.
func (t *Tunnel) LocalAddr() net.Addr { return t.conn.LocalAddr() }

// ConnectionState is the TLS state of the tunnel's connection (empty over
// a connection without TLS).
func (t *Tunnel) ConnectionState() tls.ConnectionState {
	if c, ok := t.conn.Conn.(*tls.Conn); ok {
		return c.ConnectionState()
	}
	return tls.ConnectionState{}
}

// Close ends the tunnel and every stream on it.
func (t *Tunnel) Close() error { return t.sess.Close() }

// CloseFor ends the tunnel and records why, for whoever reports its end.
func (t *Tunnel) CloseFor(reason string) error {
	t.closeReason.CompareAndSwap(nil, &reason)
	return t.sess.Close()
}

// CloseReason is the reason given to CloseFor, or "".
func (t *Tunnel) CloseReason() string {
	if r := t.closeReason.Load(); r != nil {
		return *r
	}
	return ""
}

// Done is closed when the tunnel has ended.
func (t *Tunnel) Done() <-chan struct{} { return t.sess.CloseChan() }

// Err is the first read error of the underlying connection, which says why
// the tunnel ended (for example the peer's TLS alert). It is nil while the
// tunnel is up or when it ended locally.
func (t *Tunnel) Err() error { return t.conn.readErr() }

// KeepaliveFailed reports whether the tunnel ended because the peer did
// not answer a keepalive ping in time.
func (t *Tunnel) KeepaliveFailed() bool {
	return strings.Contains(t.ylog.last(), "keepalive failed")
}

// yamuxLog keeps yamux's last error line: yamux reports why it ended a
// session (a keepalive without answer, a protocol error) only in its log.
type yamuxLog struct {
	mu   sync.Mutex
	line string
}

func (l *yamuxLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("[ERR]")) {
		l.mu.Lock()
		l.line = string(bytes.TrimSpace(p))
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *yamuxLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

// Confirm waits for the peer to answer a ping. With TLS 1.3 a client learns
// that the server rejected its certificate only on its first read, so a
// dialer confirms before it calls a tunnel established.
func (t *Tunnel) Confirm(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		_, err := t.sess.Ping()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			if rerr := t.Err(); rerr != nil {
				return rerr
			}
			return err
		}
		return nil
	case <-ctx.Done():
		t.Close()
		<-done
		// A read error other than our own Close says why (the peer's
		// alert); otherwise the peer was silent.
		if rerr := t.Err(); rerr != nil && !errors.Is(rerr, net.ErrClosed) {
			return rerr
		}
		return fmt.Errorf("%w: %w", ErrNoAnswer, ctx.Err())
	}
}

// tunnelConn sits between yamux and TLS. It records the first read error
// (the only place a TLS 1.3 client sees the server's rejection), and joins
// a small yamux data frame's 12-byte header with its body into one write,
// so the frame costs one TLS record instead of two. A frame whose body
// needs several records anyway is passed on as it came: joining it would
// copy the body to save one record of 12 bytes. The join takes a pooled
// buffer and gives it back, so a tunnel that once carried a bulk transfer
// holds no buffer for it afterwards (a hub keeps thousands of tunnels).
// Either way, batchConn sends the records in one system call.
//
// yamux writes from one goroutine (its send loop) and reads from another.
type tunnelConn struct {
	net.Conn

	mu      sync.Mutex
	err     error
	header  [wire.MuxHeaderSize]byte // a data frame header waiting for its body
	pending bool
	batch   *batchConn // the TCP connection under TLS, when wrapped
}

// maxJoined is the largest frame joined into one write: one TLS record's
// worth of plaintext.
const maxJoined = 16 << 10

var joinPool = sync.Pool{New: func() any {
	b := make([]byte, 0, maxJoined)
	return &b
}}

func (c *tunnelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *tunnelConn) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	if !c.pending {
		if isDataHeader(p) {
			copy(c.header[:], p)
			c.pending = true
			return len(p), nil
		}
		return c.write(p)
	}
	// p is the body that belongs to the pending header.
	c.pending = false
	if len(c.header)+len(p) > maxJoined {
		// A record of its own; batchConn sends it with the body's.
		if _, err := c.Conn.Write(c.header[:]); err != nil {
			return 0, err
		}
		if _, err := c.write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	buf := joinPool.Get().(*[]byte)
	joined := append(append((*buf)[:0], c.header[:]...), p...)
	_, err := c.write(joined)
	*buf = joined[:0]
	joinPool.Put(buf)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// write passes p to TLS and sends its records in one system call.
func (c *tunnelConn) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.batch != nil {
		if ferr := c.batch.Flush(); err == nil && ferr != nil {
			return 0, ferr
		}
	}
	return n, err
}

// isDataHeader reports whether p is exactly a yamux header for a data frame
// with a body (version 0, type 0, length > 0): yamux writes such a header
// and then its body in a separate call.
func isDataHeader(p []byte) bool {
	return len(p) == wire.MuxHeaderSize && p[0] == 0 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0
}
