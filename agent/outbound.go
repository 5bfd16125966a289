package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
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
	raw    *client.Client // or: a direct TLS connection per connection (mux = false)
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
			if f.raw != nil {
				defer f.agent.streams.Done()
				f.handleRaw(c)
				return
			}
			carry := f.handle(c)
			if carry == nil {
				f.agent.streams.Done()
				return
			}
			// A fresh goroutine carries the connection from here, with a
			// small stack however deep setting it up went.
			go func() {
				defer f.agent.streams.Done()
				carry()
			}()
		}()
	}
}

// handle opens a stream for one plaintext connection and returns the relay
// that carries it, or nil when no stream could be opened (the connection
// has been reset). The application's first bytes travel right behind the
// open request; the peer's bytes reach the application only after the peer
// said OK.
func (f *forward) handle(c net.Conn) (carry func()) {
	a := f.agent
	head := fmt.Sprintf("forward %s → %s/%s", f.ln.Addr(), f.via, f.service)
	log := a.log.With("client", c.RemoteAddr().String())
	ctx, cancel := context.WithTimeout(a.relayCtx, f.wait)
	t, err := f.source.Tunnel(ctx)
	cancel()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v (waited %s)", head, c.RemoteAddr(), err, f.wait))
		relay.ResetConn(c)
		return nil
	}
	st, err := t.Open()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: open stream: %v", head, c.RemoteAddr(), err))
		relay.ResetConn(c)
		return nil
	}
	head = fmt.Sprintf("stream %d %s", st.ID(), head)
	req, err := wire.AppendOpen(nil, wire.OpenRequest{
		Service: f.service, Source: c.RemoteAddr().String(), Destination: c.LocalAddr().String(),
	})
	if err == nil {
		_, err = st.Write(req)
	}
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v", head, c.RemoteAddr(), err))
		relay.ResetConn(c)
		st.Reset()
		return nil
	}
	openTimeout := a.cfg.Tunnel.OpenTimeout.D()
	awaitStatus := func() error {
		st.SetReadDeadline(time.Now().Add(openTimeout))
		s, err := wire.ReadStatus(st)
		st.SetReadDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("no answer from peer within %s: %w", openTimeout, err)
		}
		if s.Code != wire.StatusOK {
			return &wire.RefusedError{Status: s}
		}
		// The peer said OK: only now may the stream's window grow past
		// 256 KiB, as on the accepting side.
		st.Admit()
		return nil
	}
	return func() {
		stats, err := relay.Stream(a.relayCtx, c, st, awaitStatus)
		if refused, ok := asRefused(err); ok {
			a.metrics.countStream("forward", stats.Sent, 0, nil, true)
			log.Warn(fmt.Sprintf("%s: %v", head, refused))
			return
		}
		a.logRelayEnd(log, "forward", head, stats, err)
	}
}

// handleRaw carries one plaintext connection over its own TLS connection
// to a peer that is not a Postern agent (mux = false).
func (f *forward) handleRaw(c net.Conn) {
	a := f.agent
	head := fmt.Sprintf("forward %s → %s (raw TLS)", f.ln.Addr(), f.via)
	log := a.log.With("client", c.RemoteAddr().String())
	peer, err := f.raw.DialRaw(a.relayCtx)
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v", head, c.RemoteAddr(), err))
		relay.ResetConn(c)
		return
	}
	head = fmt.Sprintf("%s via %s", head, peer.RemoteAddr())
	stats, err := relay.Raw(a.relayCtx, c, peer)
	a.logRelayEnd(log, "forward", head, stats, err)
}

func asRefused(err error) (*wire.RefusedError, bool) {
	var r *wire.RefusedError
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
		best := tunnel.LeastLoaded(slices.Collect(maps.Keys(a.tunnels)), func(t *tunnel.Tunnel) bool {
			return p.pattern.Match(t.Peer)
		})
		ch := a.tunnelsChanged.Wait()
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
