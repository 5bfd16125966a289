// Package server accepts tunnels: TLS handshakes under a deadline and a bound
// on how many run at once, then a tunnel handed to the agent.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
)

// Server accepts tunnels on a listener. Set every exported field (the
// values come from the config, where their defaults live), then call Serve
// once.
type Server struct {
	Creds            *trust.Credentials
	HandshakeTimeout time.Duration // whole TLS handshake
	MaxHandshakes    int           // handshakes in progress at once
	Options          tunnel.Options
	Log              *slog.Logger
	// Handle runs for each established tunnel, on its own goroutine, and
	// owns it from then on (Serve does not wait for it).
	Handle func(t *tunnel.Tunnel)
	// Raw, if set, makes this a mux = false server: each verified TLS
	// connection (any ALPN or none) is handed to Raw on its own goroutine
	// instead of becoming a tunnel.
	Raw func(c *tls.Conn)

	failures *failureLog
}

// Serve accepts connections until ctx is done or ln fails, then closes ln
// and waits for handshakes in progress to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.failures = newFailureLog(s.Log, time.Minute)
	cfg := trust.ServerConfig(s.Creds)
	if s.Raw != nil {
		// Raw mutual-TLS peers (stunnel, applications) speak no Postern ALPN.
		perHello := cfg.GetConfigForClient
		cfg.NextProtos = nil
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := perHello(h)
			if c != nil {
				c.NextProtos = nil
			}
			return c, err
		}
	}
	slots := make(chan struct{}, s.MaxHandshakes)
	var wg sync.WaitGroup
	defer wg.Wait()

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
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
		case slots <- struct{}{}:
		default:
			s.failures.log(conn.RemoteAddr(), "too many TLS handshakes in progress (max_handshakes); connection dropped")
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.handshake(ctx, conn, cfg)
		}()
	}
}

func (s *Server) handshake(ctx context.Context, conn net.Conn, cfg *tls.Config) {
	hctx, cancel := context.WithTimeout(ctx, s.HandshakeTimeout)
	defer cancel()
	conn.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	if s.Raw == nil {
		conn = tunnel.WrapConn(conn)
	} else {
		conn = relay.WatchEOF(conn) // so relay.Raw can tell close_notify from a cut
	}
	tc := tls.Server(conn, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		m := s.Creds.Load()
		s.failures.log(conn.RemoteAddr(), "tunnel refused: "+trust.Explain(err, trust.SideServer, m.CASubjects, time.Now()))
		conn.Close()
		return
	}
	if s.Raw != nil {
		conn.SetDeadline(time.Time{})
		go s.Raw(tc)
		return
	}
	if err := trust.CheckALPN(tc.ConnectionState()); err != nil {
		s.failures.log(conn.RemoteAddr(), "tunnel refused: "+err.Error())
		tc.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	t, err := tunnel.New(tc, false, s.Options)
	if err != nil {
		s.Log.Error("tunnel setup", "peer_addr", conn.RemoteAddr().String(), "err", err)
		tc.Close()
		return
	}
	go s.Handle(t)
}
