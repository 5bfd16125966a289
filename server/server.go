// Package server accepts tunnels: TLS handshakes under a deadline and
// bounds on how many run at once, in all and per source address, then a
// tunnel handed to the agent.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// Server accepts tunnels on a listener. Set every exported field (the
// values come from the config, where their defaults live), then call Serve
// once.
type Server struct {
	Creds *trust.Credentials
	// Peer, if set, are the identities a client certificate must match
	// (besides its chain): a [[server]]'s peer.
	Peer             identity.List
	HandshakeTimeout time.Duration // whole TLS handshake
	// HelloTimeout is the time for the client's first TLS record (its
	// ClientHello); 0 leaves only HandshakeTimeout.
	HelloTimeout  time.Duration
	MaxHandshakes int // handshakes in progress at once
	// MaxHandshakesPerAddress bounds the handshakes in progress from one
	// IPv4 address or IPv6 /64; 0: no bound of its own.
	MaxHandshakesPerAddress int
	// DeferAccept, on Linux, has the kernel hand over a connection only
	// once its first bytes (the ClientHello) arrived, or about a second
	// after it was opened without any (TCP_DEFER_ACCEPT): a connection
	// whose client has not written yet takes no handshake slot, so in a
	// reconnect storm the hub does not accept partners faster than they
	// send their hellos and evict them as silent. A probe that resets
	// its connection before sending a byte is then not seen at all (one
	// that closes is). Elsewhere it does nothing.
	DeferAccept bool
	Options     tunnel.Options
	Log         *slog.Logger
	// Handle runs for each established tunnel, on its own goroutine, and
	// owns it from then on (Serve does not wait for it).
	Handle func(t *tunnel.Tunnel)
	// Raw, if set, makes this a mux = false server: each verified TLS
	// connection (any ALPN or none) is handed to Raw on its own goroutine
	// instead of becoming a tunnel.
	Raw func(c *tls.Conn)
	// Refused, if set, is called for each connection that did not become a
	// tunnel, with its cause; CauseProbe (closed without a byte, as a load
	// balancer's health check does) is counted only, not logged as a
	// warning. Called from the accept and handshake goroutines at once.
	Refused func(cause Cause)
	// Enroll, if set, also serves enrollment connections (enroll.go).
	Enroll *Enrollment

	deferSeconds int // DeferAccept's wait for a first byte, if not 1 s (tests)

	failures  *refusalLog
	gate      *gate
	enrolling sync.Map       // net.Conn → struct{}: handshakes that asked for enrollment (enroll.go)
	recent    recentRefusals // for status (recent.go)
	reasons   reasonCache    // for refusal-reason connections (refusal.go)
}

// Serve accepts connections until ctx is done or ln fails, then closes ln
// and waits for handshakes in progress to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.failures = newRefusalLog(s.Log, time.Minute, defaultRefusalSources)
	s.gate = newGate(s.MaxHandshakes, s.MaxHandshakesPerAddress)
	cfg := trust.ServerConfig(s.Creds, s.Peer...)
	if s.Raw != nil {
		// Raw mutual-TLS peers (stunnel, applications) speak no Postern ALPN.
		perHello := cfg.GetConfigForClient
		cfg.NextProtos = nil
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := perHello(h)
			if c != nil && !trust.AsksRefusal(h) {
				c = c.Clone() // the tunnel config is shared by handshakes
				c.NextProtos = nil
			}
			return c, err
		}
	}
	if s.Enroll != nil {
		cfg = s.withEnrollment(cfg)
	}
	var wg sync.WaitGroup
	logCtx, stopLog := context.WithCancel(context.Background())
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		s.failures.run(logCtx)
	}()
	defer func() {
		wg.Wait()
		stopLog()
		<-logDone
	}()

	if s.DeferAccept {
		secs := 1
		if s.deferSeconds > 0 {
			secs = s.deferSeconds
		}
		if err := deferAccept(ln, secs); err != nil {
			s.Log.Warn("tunnel listener: cannot defer accepting connections until their first bytes; silent connections take handshake slots", "listen", ln.Addr().String(), "err", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	// Accepted connections queue here for the gate (dispatch), so that
	// while every handshake slot is taken the kernel's listen queues stay
	// empty: a storm larger than them (net.core.somaxconn) would overflow
	// them, and the kernel drop SYNs (dialed again seconds later) or
	// answer with SYN cookies (connections that arrive before their
	// hellos). The queue is bounded; when it is full, accepting waits.
	queue := make(chan *queued, s.queueBound())
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		s.dispatch(ctx, queue, cfg, &wg)
	}()
	defer func() {
		close(queue)
		<-dispatched
	}()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait, don't spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Log.Warn("tunnel listener: accept failed; retrying", "listen", ln.Addr().String(), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		backoff = 0
		select {
		case queue <- &queued{conn: conn, at: time.Now()}:
		case <-ctx.Done():
			conn.Close()
			return nil
		}
	}
}

// queued is an accepted connection waiting for the gate.
type queued struct {
	conn net.Conn
	at   time.Time // accepted
}

// queueBound is how many accepted connections may wait for the gate: 64
// per handshake slot (8,192 for the default 128), as many as the hub
// handshakes in a few seconds.
func (s *Server) queueBound() int { return 64 * max(s.MaxHandshakes, 1) }

// dispatch admits the queued connections to the gate in order, and starts
// a handshake for each. When every handshake in progress is past its
// hello it waits for one to end, rather than drop. A connection that
// waited longer than handshake_timeout is dropped: its client has most
// likely given up.
func (s *Server) dispatch(ctx context.Context, queue <-chan *queued, cfg *tls.Config, wg *sync.WaitGroup) {
	for q := range queue {
		if ctx.Err() != nil {
			q.conn.Close()
			continue
		}
		if waited := time.Since(q.at); s.HandshakeTimeout > 0 && waited > s.HandshakeTimeout {
			s.refused(q.conn.RemoteAddr(), CauseBusy, fmt.Sprintf("waited %s for a handshake slot, longer than handshake_timeout (%s); connection dropped", shortDuration(waited), shortDuration(s.HandshakeTimeout)))
			q.conn.Close()
			continue
		}
		p, cause := s.gate.admitWaiting(ctx, q.conn)
		if p == nil {
			if ctx.Err() == nil {
				s.refused(q.conn.RemoteAddr(), cause, s.busyReason(cause))
			}
			q.conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handshake(ctx, p, cfg)
		}()
	}
}

func (s *Server) busyReason(cause Cause) string {
	if cause == CauseSourceBusy {
		return fmt.Sprintf("%d TLS handshakes from this address in progress, each past its ClientHello (max_handshakes_per_address); connection dropped", s.MaxHandshakesPerAddress)
	}
	return fmt.Sprintf("%d TLS handshakes in progress, each past its ClientHello (max_handshakes); connection dropped", s.MaxHandshakes)
}

// refused logs (probes: counts) a connection that did not become a tunnel.
func (s *Server) refused(addr net.Addr, cause Cause, reason string) {
	if s.Refused != nil {
		s.Refused(cause)
	}
	if cause == CauseProbe {
		s.Log.Debug("tunnel probe: closed without sending a byte", "peer_addr", addr.String())
		return
	}
	s.recent.add(addr, cause, reason, time.Now())
	s.failures.log(addr, cause, reason)
}

func (s *Server) handshake(ctx context.Context, p *pending, cfg *tls.Config) {
	defer s.gate.release(p) // release is idempotent; the calls below free the slot as soon as the handshake ends
	hctx, cancel := context.WithTimeout(ctx, s.HandshakeTimeout)
	defer cancel()
	hctx, verdict := trust.WithVerdict(hctx)
	start := time.Now()
	deadline := start.Add(s.HandshakeTimeout)
	helloDeadline := deadline
	if s.HelloTimeout > 0 && s.HelloTimeout < s.HandshakeTimeout {
		helloDeadline = start.Add(s.HelloTimeout)
	}
	// rawio: reads and writes that do not wake the runtime's monitor thread.
	hc := &helloConn{Conn: rawio.Wrap(p.conn), until: deadline, done: func() { s.gate.hello(p) }, reading: &p.reading, wake: s.gate.wake}
	hc.SetWriteDeadline(deadline)
	hc.SetReadDeadline(helloDeadline)
	var conn net.Conn = hc
	if s.Raw == nil {
		conn = tunnel.WrapConn(conn)
	} else {
		conn = relay.WatchEOF(conn) // so relay.Raw can tell close_notify from a cut
	}
	tc := tls.Server(conn, cfg)
	err := tc.HandshakeContext(hctx)
	enrolling := s.enrollAttempt(conn)
	if err != nil {
		evicted := s.gate.release(p)
		conn.Close()
		switch {
		case ctx.Err() != nil:
			// Shutting down: not the client's doing.
		case evicted:
			s.refused(p.conn.RemoteAddr(), CauseBusy, "closed before its ClientHello, to make room for a new connection (max_handshakes or max_handshakes_per_address reached)")
		default:
			now := time.Now()
			cause, reason := s.explain(err, hc, helloDeadline.Sub(start), now)
			switch {
			case enrolling:
				reason = enrollReason(cause, reason)
			case cause == CauseCertificate:
				s.reasons.remember(tc, err, now) // for the client, should it ask why
			}
			s.refused(p.conn.RemoteAddr(), cause, reason)
		}
		return
	}
	s.gate.release(p)
	if tc.ConnectionState().NegotiatedProtocol == wire.RefusalALPN {
		s.answerRefusal(tc, verdict)
		return
	}
	if s.isEnrollment(tc) {
		hc.SetDeadline(time.Time{})
		go s.Enroll.Handle(tc)
		return
	}
	if s.Raw != nil {
		hc.SetDeadline(time.Time{})
		go s.Raw(tc)
		return
	}
	if err := trust.CheckALPN(tc.ConnectionState()); err != nil {
		s.refused(p.conn.RemoteAddr(), CauseProtocol, err.Error())
		tc.Close()
		return
	}
	hc.SetDeadline(time.Time{})
	t, err := tunnel.New(tc, false, s.Options)
	if err != nil {
		s.Log.Error("tunnel setup", "peer_addr", p.conn.RemoteAddr().String(), "err", err)
		tc.Close()
		return
	}
	go s.Handle(t)
}

// explain gives a failed handshake's cause and the sentence that says it.
func (s *Server) explain(err error, hc *helloConn, helloWait time.Duration, now time.Time) (Cause, string) {
	cause := classify(err, hc.silent())
	if cause == CauseTimeout && !hc.seen {
		key := "hello_timeout"
		if helloWait >= s.HandshakeTimeout {
			key = "handshake_timeout"
		}
		return cause, fmt.Sprintf("the client did not complete the TLS handshake in time: no ClientHello within %s (%s)", shortDuration(helloWait), key)
	}
	return cause, s.Creds.Explain(err, trust.SideServer, now)
}
