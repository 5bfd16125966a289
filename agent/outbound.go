package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// forward is a plaintext listener whose connections become streams to a
// service on the peer, or (mux = false) raw TLS connections to it.
type forward struct {
	agent   *Agent
	ln      net.Listener
	addr    string // ln's address, for logs and metrics
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
			f.agent.log.Warn("forward cannot accept connections; retrying", "forward", f.ln.Addr().String(), "err", err, "retry_in", "100ms")
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		f.agent.streams.Add()
		f.agent.setup.Go(func() {
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
		})
	}
}

// handle opens a stream for one plaintext connection and returns the relay
// that carries it, or nil when no stream could be opened (the connection
// has been reset). The application's first bytes travel right behind the
// open request; the peer's bytes reach the application only after the peer
// said OK.
func (f *forward) handle(c net.Conn) (carry func()) {
	a := f.agent
	log := f.log(c)
	st, noTunnel, err := f.open()
	if err != nil {
		f.failed(err)
	}
	if noTunnel {
		log.Warn("connection reset: no tunnel to carry it", "err", err, "wait", f.wait.String())
		relay.ResetConn(c)
		return nil
	}
	if err != nil {
		log.Warn("connection reset: cannot open a stream", "err", err)
		relay.ResetConn(c)
		return nil
	}
	log = log.With("stream", st.ID())
	rec := f.begin(c, st.Tunnel().Peer, st.Tunnel().RemoteAddr())
	req, err := wire.AppendOpen(nil, wire.OpenRequest{
		Service: f.service, Source: ipPort(c.RemoteAddr()), Destination: ipPort(c.LocalAddr()),
	})
	if err == nil {
		_, err = st.Write(req)
	}
	if err != nil {
		log.Warn("connection reset: cannot send the open request", "err", err)
		rec.finish("reset", 0, 0, err.Error())
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
		// 256 KiB, as on the accepting side. Queued: where the relay's
		// receive direction waits in a read (no direct delivery, as on
		// Windows) this goroutine waits as long as the connection is held.
		st.AdmitQueued()
		return nil
	}
	return func() {
		stats, err := relay.Stream(a.relayCtx, c, st, awaitStatus)
		if refused, ok := asRefused(err); ok {
			a.metrics.countStream("forward", stats.Sent, 0, nil, true)
			rec.refused(refused.Status.Reason)
			log.Warn("stream refused by peer", "reason", refused.Status.Reason, "code", refused.Status.Code.String())
			return
		}
		a.logRelayEnd(log, rec, "stream", stats, err)
	}
}

// open opens a stream on the least loaded tunnel that takes new streams,
// waiting up to tunnel_wait for one. A tunnel its peer has retired (it
// refuses the stream before any byte of it was sent) is skipped from then
// on, and the next one is tried. noTunnel says none came up in time.
func (f *forward) open() (st *tunnel.Stream, noTunnel bool, err error) {
	ctx, cancel := context.WithTimeout(f.agent.relayCtx, f.wait)
	defer cancel()
	for {
		t, err := f.source.Tunnel(ctx)
		if err != nil {
			return nil, true, err
		}
		st, err := t.Open()
		if errors.Is(err, tunnel.ErrRetiring) {
			continue // t is marked retiring now: Tunnel will not pick it again
		}
		return st, false, err
	}
}

// handleRaw carries one plaintext connection over its own TLS connection
// to a peer that is not a Postern agent (mux = false).
func (f *forward) handleRaw(c net.Conn) {
	a := f.agent
	log := f.log(c)
	peer, err := f.raw.DialRaw(a.relayCtx)
	if err != nil {
		f.failed(err)
		log.Warn("connection reset: no raw TLS connection to the peer", "err", err)
		relay.ResetConn(c)
		return
	}
	log = log.With("addr", peer.RemoteAddr().String())
	defer a.raws.add(&rawConn{c: peer, side: trust.SideClient, creds: f.raw.Creds, where: "forward " + f.addr + " to " + peer.RemoteAddr().String()})()
	rec := f.begin(c, peerLeaf(peer), peer.RemoteAddr())
	stats, err := relay.Raw(a.relayCtx, c, peer)
	if reason, ok := f.raw.RefusalReason(a.relayCtx, err, peer.RemoteAddr().String()); ok {
		err = fmt.Errorf("%s (%w)", reason, err) // TLS 1.3: the refusal came on the first read
	}
	a.logRelayEnd(log, rec, "raw TLS connection", stats, err)
}

// log is the agent's logger with the attributes of one connection the
// forward accepted.
func (f *forward) log(c net.Conn) *slog.Logger {
	attrs := make([]any, 0, 8) // one With: each allocates a logger of its own
	attrs = append(attrs, "forward", f.addr, "via", f.via)
	if f.service != "" {
		attrs = append(attrs, "service", f.service)
	}
	if src, ok := c.RemoteAddr().(*net.TCPAddr); ok { // see ipPort
		attrs = append(attrs, "client", addrValue{src})
	}
	return lazyLog(f.agent.log).With(attrs...)
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
	absence // guarded by agent.mu
}

// Tunnel returns the least loaded connected tunnel of a matching peer,
// waiting for one to connect until ctx is done.
func (p *peerSource) Tunnel(ctx context.Context) (*tunnel.Tunnel, error) {
	a := p.agent
	for {
		a.mu.Lock()
		best := tunnel.LeastLoaded(slices.Collect(maps.Keys(a.tunnels)), func(t *tunnel.Tunnel) bool {
			return p.pattern.MatchVerified(t.Chains)
		})
		ch := a.tunnelsChanged.Wait()
		gone := p.longGone()
		a.mu.Unlock()
		if best != nil {
			return best, nil
		}
		if gone != nil {
			return nil, gone
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("no connected peer matches %s", p.pattern)
		}
	}
}
