package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// service is a configured target that peers may reach.
type service struct {
	name          string
	target        string
	allow         identity.List
	dialTimeout   time.Duration
	proxyProtocol byte // 0 (off), 1 or 2: PROXY header version sent to the target
}

// dial connects to the service's target and, when configured, sends the
// PROXY protocol header naming the original client (source) and the
// address it connected to (dest), both "ip:port".
func (s *service) dial(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), source, dest string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.dialTimeout)
	defer cancel()
	c, err := dial(ctx, "tcp", s.target)
	if err != nil || s.proxyProtocol == 0 {
		return c, err
	}
	h := proxyproto.HeaderProxyFromAddrs(s.proxyProtocol, tcpAddr(source), tcpAddr(dest))
	c.SetWriteDeadline(time.Now().Add(s.dialTimeout))
	if _, err := h.WriteTo(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("send PROXY header: %w", err)
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// tcpAddr parses "ip:port"; anything else yields nil, and the PROXY
// header then says the address is unknown (LOCAL / UNKNOWN).
func tcpAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

// serveTunnel accepts the peer's streams until the tunnel ends, and ends
// the tunnel when it can accept no more: a tunnel either accepts or is
// closed. One acceptor is enough: accepting queues the stream's ACK ahead
// of stream data without waiting for it, and each stream is handled on
// its own goroutine, so accepting never waits for a stream's work.
func (a *Agent) serveTunnel(t *tunnel.Tunnel) {
	for {
		st, err := t.Accept()
		if err != nil {
			if !t.Closed() {
				t.CloseFor(fmt.Sprintf("accept stream: %v", err))
			}
			return
		}
		a.streams.Add()
		go func() {
			carry := a.handleStream(t, st)
			if carry == nil {
				a.streams.Done()
				return
			}
			// A fresh goroutine carries the stream from here: setting
			// it up (dialing, logging) grew this one's stack, which a
			// connection held open for hours would otherwise keep.
			go func() {
				defer a.streams.Done()
				carry()
			}()
		}()
	}
}

// handleStream answers one open request and connects the stream's service
// target. It returns the relay to run, or nil when the stream was refused
// or failed.
func (a *Agent) handleStream(t *tunnel.Tunnel, st *tunnel.Stream) (carry func()) {
	log := a.log.With("stream", st.ID(), "peer_addr", t.RemoteAddr().String())
	st.SetReadDeadline(time.Now().Add(a.cfg.Tunnel.OpenTimeout.D()))
	req, err := wire.ReadOpen(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, wire.ErrProtocol) {
			log.Warn(fmt.Sprintf("stream %d from %s: bad open request: %v", st.ID(), t.RemoteAddr(), err), "peer", identity.Describe(t.Peer))
			a.refuse(st, wire.StatusProtocolError, "malformed open request")
		} else {
			log.Debug("stream closed before its open request", "err", err)
			st.Reset()
		}
		return nil
	}
	who := identity.Describe(t.Peer)
	head := fmt.Sprintf("stream %d from %s (%s) → service %q", st.ID(), t.RemoteAddr(), who, req.Service)
	if req.Source != "" {
		log = log.With("client", req.Source)
	}
	svc := a.services[req.Service]
	// Every stream the tunnel holds counts, this one included, until both
	// ends closed it: refused streams whose opener never closes them too.
	open := t.Streams()
	switch {
	case a.draining.Load():
		a.refuse(st, wire.StatusOverloaded, errDraining.Error())
		log.Info(head + ": refused: agent is shutting down")
		return nil
	case a.tun.MaxStreams > 0 && open > a.tun.MaxStreams:
		a.refuse(st, wire.StatusOverloaded, "too many streams on this tunnel")
		log.Warn(fmt.Sprintf("%s: refused: %d streams open on this tunnel (max_streams %d)", head, open-1, a.tun.MaxStreams))
		return nil
	case svc == nil:
		a.refuse(st, wire.StatusUnknownService, fmt.Sprintf("unknown service %q", req.Service))
		log.Warn(head + ": refused: no such service here")
		return nil
	}
	if _, ok := svc.allow.Match(t.Peer); !ok {
		a.refuse(st, wire.StatusNotAllowed, "not allowed for "+who)
		log.Warn(fmt.Sprintf("%s: refused: identity not in allow (%v)", head, allowString(svc.allow)))
		return nil
	}
	target, err := svc.dial(a.relayCtx, a.opts.Dial, req.Source, req.Destination)
	if err != nil {
		a.refuse(st, wire.StatusTargetUnreachable, fmt.Sprintf("service %q: target unreachable", req.Service))
		log.Warn(fmt.Sprintf("%s: target %s unreachable: %v", head, svc.target, err))
		return nil
	}
	if _, err := st.Write(wire.AppendStatus(nil, wire.Status{Code: wire.StatusOK})); err != nil {
		target.Close()
		st.Reset()
		return nil
	}
	// Answered OK: only now may the stream's window grow past 256 KiB.
	st.Admit()
	log.Debug(head + ": connected to " + svc.target)
	return func() {
		stats, err := relay.Stream(a.relayCtx, target, st, nil)
		a.logRelayEnd(log, "service", head+" ("+svc.target+")", stats, err)
	}
}

func (a *Agent) refuse(st *tunnel.Stream, code wire.Code, reason string) {
	a.metrics.countStream("service", 0, 0, nil, true)
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	st.Write(wire.AppendStatus(nil, wire.Status{Code: code, Reason: reason}))
	st.Close()
	// The opener may still read the answer, but nothing it sends is kept.
	st.Discard()
}

func allowString(l identity.List) string {
	if len(l) == 0 {
		return "allow is empty: default deny"
	}
	return fmt.Sprintf("allow = %q", l.Strings())
}

// logRelayEnd logs how a relay ended. Aborts are normal events for a
// tunnel (the far end reset, the agent stopped), so they are info, not
// errors.
func (a *Agent) logRelayEnd(log interface {
	Debug(string, ...any)
	Info(string, ...any)
}, side, head string, stats relay.Stats, err error) {
	a.metrics.countStream(side, stats.Sent, stats.Received, err, false)
	if err == nil {
		log.Debug(head+": closed", "sent", stats.Sent, "received", stats.Received)
		return
	}
	log.Info(fmt.Sprintf("%s: reset: %v", head, err), "sent", stats.Sent, "received", stats.Received)
}

// isClosed reports the errors of a listener that was closed on purpose.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// serveRaw handles a connection accepted by a mux = false server: a raw
// mutual-TLS client (stunnel, or a TLS-capable application) whose bytes go
// to svc, if its identity is allowed.
func (a *Agent) serveRaw(c *tls.Conn, svc *service) {
	a.streams.Add()
	defer a.streams.Done()
	peer := c.ConnectionState().PeerCertificates[0]
	who := identity.Describe(peer)
	head := fmt.Sprintf("raw TLS from %s (%s) → service %q", c.RemoteAddr(), who, svc.name)
	log := a.log.With("peer_addr", c.RemoteAddr().String())
	if a.draining.Load() {
		log.Info(head + ": refused: agent is shutting down")
		c.Close()
		return
	}
	if _, ok := svc.allow.Match(peer); !ok {
		log.Warn(fmt.Sprintf("%s: refused: identity not in allow (%v)", head, allowString(svc.allow)))
		a.metrics.countStream("service", 0, 0, nil, true)
		resetTLS(c)
		return
	}
	target, err := svc.dial(a.relayCtx, a.opts.Dial, c.RemoteAddr().String(), c.LocalAddr().String())
	if err != nil {
		log.Warn(fmt.Sprintf("%s: target %s unreachable: %v", head, svc.target, err))
		resetTLS(c)
		return
	}
	stats, err := relay.Raw(a.relayCtx, target, c)
	a.logRelayEnd(log, "service", head+" ("+svc.target+")", stats, err)
}

// resetTLS drops a TLS connection without close_notify, with a TCP reset,
// so the peer cannot take it for a clean, empty answer.
func resetTLS(c *tls.Conn) {
	relay.ResetConn(c.NetConn())
}
