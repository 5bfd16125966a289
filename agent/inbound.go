package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// service is a configured target that peers may reach.
type service struct {
	name          string
	targets       *targetSet // host:port, or unix:PATH, each
	allow         identity.List
	dialTimeout   time.Duration
	proxyProtocol byte    // 0 (off), 1 or 2: PROXY header version sent to the target
	limits        *limits // nil: none
	stopHealth    func()  // ends its health checks, or nil (reconfig.go)
}

// dial connects to one of the service's targets (see targets.go) and,
// when configured, sends the PROXY protocol header describing the
// connection's origin. It returns the target it connected to. dial is the
// agent's dialPlain: the connection comes armed to close with a reset, so a
// crash resets the target, never a clean end.
func (s *service) dial(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), origin proxyOrigin) (net.Conn, config.Address, error) {
	c, addr, err := s.targets.dial(ctx, dial, s.dialTimeout)
	if err != nil {
		return nil, "", err
	}
	if s.proxyProtocol == 0 {
		return c, addr, nil
	}
	h, err := origin.header(s.proxyProtocol)
	if err == nil {
		c.SetWriteDeadline(time.Now().Add(s.dialTimeout))
		_, err = h.WriteTo(c)
	}
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("send PROXY header to %s: %w", addr, err)
	}
	c.SetWriteDeadline(time.Time{})
	return c, addr, nil
}

// serveTunnel serves the peer's streams until the tunnel ends (see
// serveTunnelThen), and returns then.
func (a *Agent) serveTunnel(t *tunnel.Tunnel) {
	ended := make(chan struct{})
	a.serveTunnelThen(t, func() { close(ended) })
	<-ended
}

// serveTunnelThen hands each stream the peer opens to a goroutine of its
// own, and runs then once the tunnel has ended. No goroutine waits for
// the peer's streams in between: an idle tunnel costs a hub its memory
// only. A stream that cannot be accepted ends the tunnel: a tunnel either
// accepts or is closed.
func (a *Agent) serveTunnelThen(t *tunnel.Tunnel, then func()) {
	down := a.tunnelUp(t)
	a.controlOnConnect(t) // the [ca] CRL pushed, a waiting renewal tried (controlstream.go)
	t.Serve(func(st *tunnel.Stream) {
		a.streams.Add()
		carry := a.handleStream(t, st)
		if carry == nil {
			a.streams.Done()
			return
		}
		// A fresh goroutine carries the stream from here: setting it up
		// (dialing, logging) grew this one's stack, which a connection
		// held open for hours would otherwise keep.
		go func() {
			defer a.streams.Done()
			carry()
		}()
	})
	t.AfterClose(func() {
		down()
		then()
	})
}

// handleStream answers one open request and connects the stream's service
// target. It returns the relay to run, or nil when the stream was refused
// or failed.
func (a *Agent) handleStream(t *tunnel.Tunnel, st *tunnel.Stream) (carry func()) {
	log := lazyLog(a.log).With("stream", st.ID(), "peer_addr", addrValue{t.RemoteAddr()}, "peer", peerValue{t.Peer})
	st.SetReadDeadline(time.Now().Add(a.cfg.Tunnel.OpenTimeout.D()))
	req, ctl, err := wire.ReadRequest(st)
	st.SetReadDeadline(time.Time{})
	if ctl != nil {
		a.answerControl(t, st, ctl, log) // renewal, CRL push between agents (controlstream.go)
		return nil
	}
	if err != nil {
		if errors.Is(err, wire.ErrProtocol) {
			log.Warn("stream refused", "reason", "bad open request", "err", err)
			a.refuse(st, nil, wire.StatusProtocolError, "malformed open request")
		} else {
			log.Debug("stream closed before its open request", "err", err)
			st.Reset()
		}
		return nil
	}
	if req.Source != "" {
		log = log.With("client", req.Source, "service", req.Service)
	} else {
		log = log.With("service", req.Service)
	}
	svc := a.service(req.Service)
	// Every stream the tunnel holds counts, this one included, until both
	// ends closed it: refused streams whose opener never closes them too.
	open := t.Streams()
	rec := a.beginStream("service", "service "+a.serviceLabel(req.Service), a.tunnelLabel(t), req.Service, "source", req.Source)
	switch {
	case a.draining.Load():
		a.refuse(st, rec, wire.StatusOverloaded, errDraining.Error())
		log.Info("stream refused", "reason", "agent is shutting down")
		return nil
	case a.tun.MaxStreams > 0 && open > a.tun.MaxStreams:
		a.refuse(st, rec, wire.StatusOverloaded, "too many streams on this tunnel")
		log.Warn("stream refused", "reason", "too many streams open on this tunnel (max_streams)",
			"open", open-1, "max_streams", a.tun.MaxStreams)
		return nil
	case svc == nil:
		a.refuse(st, rec, wire.StatusUnknownService, fmt.Sprintf("unknown service %q", req.Service))
		log.Warn("stream refused", "reason", "no such service here")
		return nil
	}
	allowed, ok := svc.allow.MatchVerified(t.Chains)
	if !ok {
		a.refuse(st, rec, wire.StatusNotAllowed, "not allowed for "+identity.Describe(t.Peer))
		log.Warn("stream refused", "reason", notAllowed(svc.allow), "allow", allowAttr(svc.allow.Strings()), "issuer", verifiedIssuer(t.Chains))
		return nil
	}
	release, pace, overLimit := svc.admit(a, t)
	if overLimit != "" {
		a.refuse(st, rec, wire.StatusOverloaded, overLimit)
		log.Warn("stream refused", "reason", overLimit)
		return nil
	}
	target, used, err := svc.dial(a.relayCtx, a.dialPlain, proxyOrigin{source: req.Source, dest: req.Destination,
		peer: t.Peer, allowed: allowed, tlsVersion: t.ConnectionState().Version})
	if err != nil {
		release()
		a.refuse(st, rec, wire.StatusTargetUnreachable, fmt.Sprintf("service %q: target unreachable", req.Service))
		log.Warn("stream refused", "reason", "target unreachable", "target", svc.targets.attr(), "err", err)
		return nil
	}
	log = log.With("target", used)
	if _, err := st.Write(wire.AppendStatus(nil, wire.Status{Code: wire.StatusOK})); err != nil {
		target.Close()
		st.Reset()
		release()
		rec.finish("reset", 0, 0, err.Error())
		return nil
	}
	// Answered OK: only now may the stream's window grow past 256 KiB.
	st.Admit()
	log.Debug("stream connected to its target")
	untrack, ok := a.track(svc, t.Chains, func() { st.Reset(); target.Close() })
	if !ok {
		target.Close()
		st.Reset()
		release()
		rec.finish("reset", 0, 0, "identity no longer allowed after reload")
		return nil
	}
	return func() {
		defer untrack()
		stats, err := relay.Stream(a.relayCtx, target, a.paced(st, pace), nil)
		release()
		a.logRelayEnd(log, rec, "stream", stats, err)
	}
}

func (a *Agent) refuse(st *tunnel.Stream, rec *streamRecord, code wire.Code, reason string) {
	a.metrics.countStream("service", 0, 0, nil, true)
	if rec != nil {
		rec.refused(reason)
	}
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	st.Write(wire.AppendStatus(nil, wire.Status{Code: code, Reason: reason}))
	st.Close()
	// The opener may still read the answer, but nothing it sends is kept.
	st.Discard()
}

// allowAttr is a service's allow list as a log value: a JSON array in JSON
// logs, and written as in the config file (["dns:a", "cn:B C"]) in text
// logs, where entries may hold spaces.
type allowAttr []string

func (l allowAttr) MarshalJSON() ([]byte, error) { return json.Marshal([]string(l)) }

func (l allowAttr) MarshalText() ([]byte, error) {
	q := make([]string, len(l))
	for i, e := range l {
		q[i] = strconv.Quote(e)
	}
	return []byte("[" + strings.Join(q, ", ") + "]"), nil
}

// notAllowed is the reason a peer's stream to a service is refused.
func notAllowed(l identity.List) string {
	if len(l) == 0 {
		return "identity not in allow: the service's allow is empty (default deny); add the peer's identity to it"
	}
	return "identity not in allow: add the peer's identity (postern pki show) to the service's allow to let it in"
}

// logRelayEnd counts how a relay ended and writes its access log line:
// what ("stream" or "raw TLS connection") closed or was reset. Aborts are
// normal events for a tunnel (the far end reset, the agent stopped), so
// they are info, not errors.
func (a *Agent) logRelayEnd(log *slog.Logger, rec *streamRecord, what string, stats relay.Stats, err error) {
	a.metrics.countStream(rec.side, stats.Sent, stats.Received, err, false)
	rec.ended(log, what, stats, err)
}

// isClosed reports the errors of a listener that was closed on purpose.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// serveRaw handles a connection accepted by a mux = false server: a raw
// mutual-TLS client (stunnel, or a TLS-capable application) whose bytes go
// to svc, if its identity is allowed. creds are its [[server]]'s.
func (a *Agent) serveRaw(c *tls.Conn, svc *service, creds *trust.Credentials) {
	a.streams.Add()
	defer a.streams.Done()
	cs := c.ConnectionState()
	peer := cs.PeerCertificates[0]
	log := a.log.With("peer_addr", c.RemoteAddr().String(), "peer", peerValue{peer}, "service", svc.name)
	rec := a.beginStream("service", "service "+svc.name, a.peerLabel("", cs.VerifiedChains), svc.name, "source", c.RemoteAddr().String())
	if a.draining.Load() {
		rec.refused("agent is shutting down")
		log.Info("raw TLS connection refused", "reason", "agent is shutting down")
		c.Close()
		return
	}
	allowed, ok := svc.allow.MatchVerified(cs.VerifiedChains)
	if !ok {
		log.Warn("raw TLS connection refused", "reason", notAllowed(svc.allow), "allow", allowAttr(svc.allow.Strings()), "issuer", verifiedIssuer(cs.VerifiedChains))
		a.metrics.countStream("service", 0, 0, nil, true)
		rec.refused("not allowed")
		resetTLS(c)
		return
	}
	release, overLimit := svc.admitRaw(a, cs.VerifiedChains)
	if overLimit != "" {
		log.Warn("raw TLS connection refused", "reason", overLimit)
		a.metrics.countStream("service", 0, 0, nil, true)
		rec.refused(overLimit)
		resetTLS(c)
		return
	}
	defer release()
	defer a.raws.add(&rawConn{c: c, side: trust.SideServer, creds: creds, where: "raw TLS from " + c.RemoteAddr().String() + " to service " + svc.name})()
	target, used, err := svc.dial(a.relayCtx, a.dialPlain, proxyOrigin{source: c.RemoteAddr().String(), dest: c.LocalAddr().String(),
		peer: peer, allowed: allowed, tlsVersion: cs.Version})
	if err != nil {
		log.Warn("raw TLS connection refused", "reason", "target unreachable", "target", svc.targets.attr(), "err", err)
		rec.refused("target unreachable")
		resetTLS(c)
		return
	}
	log = log.With("target", used)
	untrack, ok := a.track(svc, cs.VerifiedChains, func() { resetTLS(c); target.Close() })
	if !ok {
		target.Close()
		resetTLS(c)
		rec.refused("identity no longer allowed after reload")
		return
	}
	defer untrack()
	stats, err := relay.Raw(a.relayCtx, target, c)
	a.logRelayEnd(log, rec, "raw TLS connection", stats, err)
}

// resetTLS drops a TLS connection without close_notify, with a TCP reset,
// so the peer cannot take it for a clean, empty answer.
func resetTLS(c *tls.Conn) {
	relay.ResetConn(c.NetConn())
}
