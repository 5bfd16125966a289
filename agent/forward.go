package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/tunnel"
)

// forward is a plaintext listener whose connections become streams to a
// service on the peer, or (mux = false) raw TLS connections to it.
type forward struct {
	agent   *Agent
	ln      net.Listener
	service string
	via     string
	wait    time.Duration // for a tunnel, when none is up

	source tunnelSource   // where streams go (mux)
	plain  *client.Client // or: a TLS connection per connection (mux = false)
}

// tunnelSource picks a live tunnel for a new stream, waiting for one until
// ctx is done.
type tunnelSource interface {
	Tunnel(ctx context.Context) (*tunnel.Tunnel, error)
}

func (f *forward) serve(ctx context.Context) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if isClosed(err) || ctx.Err() != nil {
				return
			}
			f.agent.log.Warn(fmt.Sprintf("forward %s: accept: %v", f.ln.Addr(), err))
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		f.agent.streams.Add()
		go func() {
			if f.plain != nil {
				defer f.agent.streams.Done()
				f.handlePlain(c)
				return
			}
			relay := f.handle(c)
			if relay == nil {
				f.agent.streams.Done()
				return
			}
			// A fresh goroutine carries the connection from here, with a
			// small stack however deep setting it up went.
			go func() {
				defer f.agent.streams.Done()
				relay()
			}()
		}()
	}
}

// handle opens a stream for one plaintext connection and returns the relay
// that carries it, or nil when no stream could be opened (the connection
// has been reset). The application's first bytes travel right behind the
// open request; the peer's bytes reach the application only after the peer
// said OK.
func (f *forward) handle(c net.Conn) (relay func()) {
	a := f.agent
	head := fmt.Sprintf("forward %s → %s/%s", f.ln.Addr(), f.via, f.service)
	log := a.log.With("client", c.RemoteAddr().String())
	ctx, cancel := context.WithTimeout(a.relayCtx, f.wait)
	t, err := f.source.Tunnel(ctx)
	cancel()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v (waited %s)", head, c.RemoteAddr(), err, f.wait))
		tunnel.ResetConn(c)
		return nil
	}
	st, err := t.Session.OpenStream()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: open stream: %v", head, c.RemoteAddr(), err))
		tunnel.ResetConn(c)
		return nil
	}
	head = fmt.Sprintf("stream %d %s", st.StreamID(), head)
	req, err := tunnel.AppendOpen(nil, tunnel.OpenRequest{
		Service: f.service, Source: c.RemoteAddr().String(), Destination: c.LocalAddr().String(),
	})
	if err == nil {
		_, err = st.Write(req)
	}
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v", head, c.RemoteAddr(), err))
		tunnel.ResetConn(c)
		st.Close()
		return nil
	}
	openTimeout := a.cfg.Tunnel.OpenTimeout.D()
	awaitStatus := func() error {
		st.SetReadDeadline(time.Now().Add(openTimeout))
		s, err := tunnel.ReadStatus(st)
		st.SetReadDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("no answer from peer within %s: %w", openTimeout, err)
		}
		if s.Code != tunnel.StatusOK {
			return &tunnel.RefusedError{Status: s}
		}
		return nil
	}
	return func() {
		stats, err := tunnel.Relay(a.relayCtx, c, st, awaitStatus)
		if refused, ok := asRefused(err); ok {
			a.metrics.countStream("forward", stats.Sent, 0, nil, true)
			log.Warn(fmt.Sprintf("%s: %v", head, refused))
			return
		}
		a.logRelayEnd(log, "forward", head, stats, err)
	}
}

// handlePlain carries one plaintext connection over its own TLS connection
// to a peer that is not a Postern agent (mux = false).
func (f *forward) handlePlain(c net.Conn) {
	a := f.agent
	head := fmt.Sprintf("forward %s → %s (plain TLS)", f.ln.Addr(), f.via)
	log := a.log.With("client", c.RemoteAddr().String())
	peer, err := f.plain.DialPlain(a.relayCtx)
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v", head, c.RemoteAddr(), err))
		tunnel.ResetConn(c)
		return
	}
	head = fmt.Sprintf("%s via %s", head, peer.RemoteAddr())
	stats, err := tunnel.RelayRaw(a.relayCtx, c, peer)
	a.logRelayEnd(log, "forward", head, stats, err)
}

func asRefused(err error) (*tunnel.RefusedError, bool) {
	var r *tunnel.RefusedError
	ok := errors.As(err, &r)
	return r, ok
}

// peerSource picks among the accepted tunnels whose peer matches an
// identity: the tunnels of a reverse forward.
type peerSource struct {
	agent   *Agent
	pattern identity.Pattern
}

// Tunnel returns the least loaded connected tunnel of a matching peer,
// waiting for one to connect until ctx is done.
func (p *peerSource) Tunnel(ctx context.Context) (*tunnel.Tunnel, error) {
	a := p.agent
	for {
		a.mu.Lock()
		var best *tunnel.Tunnel
		for t := range a.tunnels {
			if t.Session.IsClosed() || !p.pattern.MatchVerified(t.Chains) {
				continue
			}
			if best == nil || t.Session.NumStreams() < best.Session.NumStreams() {
				best = t
			}
		}
		ch := a.tunnelsChangedCh()
		a.mu.Unlock()
		if best != nil {
			return best, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("no connected peer matches %s", p.pattern)
		}
	}
}

// tunnelsChanged wakes reverse forwards waiting for a peer; a.mu must be
// held.
func (a *Agent) tunnelsChanged() {
	if a.tunnelsChange != nil {
		close(a.tunnelsChange)
		a.tunnelsChange = nil
	}
}

// tunnelsChangedCh must be called with a.mu held.
func (a *Agent) tunnelsChangedCh() chan struct{} {
	if a.tunnelsChange == nil {
		a.tunnelsChange = make(chan struct{})
	}
	return a.tunnelsChange
}
