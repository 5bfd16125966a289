package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/tunnel"
)

// service is a configured target that peers may reach.
type service struct {
	name        string
	target      string
	allow       identity.List
	dialTimeout time.Duration
}

// acceptors is how many goroutines accept streams on one tunnel at once.
// yamux's AcceptStream sends the stream's ACK through the tunnel's send
// queue, behind the data of every busy stream; one acceptor alone would make
// opens wait in line under load until the peer's open timeout kills the
// tunnel.
const acceptors = 16

// serveTunnel accepts the peer's streams until the tunnel ends. Each
// stream is handled on its own goroutine, so accepting never waits for a
// stream's work.
func (a *Agent) serveTunnel(t *tunnel.Tunnel) {
	var open atomic.Int64
	var wg sync.WaitGroup
	for range acceptors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st, err := t.Session.AcceptStream()
				if err != nil {
					return
				}
				n := open.Add(1)
				a.streams.Add()
				go func() {
					defer a.streams.Done()
					defer open.Add(-1)
					a.handleStream(t, st, n)
				}()
			}
		}()
	}
	wg.Wait()
}

// handleStream answers one open request and relays the stream to its
// service's target.
func (a *Agent) handleStream(t *tunnel.Tunnel, st *yamux.Stream, open int64) {
	log := a.log.With("stream", st.StreamID(), "peer_addr", t.RemoteAddr().String())
	st.SetReadDeadline(time.Now().Add(a.cfg.Tunnel.OpenTimeout.D()))
	req, err := tunnel.ReadOpen(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, tunnel.ErrProtocol) {
			log.Warn(fmt.Sprintf("stream %d from %s: bad open request: %v", st.StreamID(), t.RemoteAddr(), err), "peer", identity.Describe(t.Peer))
			refuse(st, tunnel.StatusProtocolError, "malformed open request")
		} else {
			log.Debug("stream closed before its open request", "err", err)
			st.Close()
		}
		return
	}
	who := identity.Describe(t.Peer)
	head := fmt.Sprintf("stream %d from %s (%s) → service %q", st.StreamID(), t.RemoteAddr(), who, req.Service)
	if req.Source != "" {
		log = log.With("client", req.Source)
	}
	svc := a.services[req.Service]
	switch {
	case a.draining.Load():
		refuse(st, tunnel.StatusOverloaded, errDraining.Error())
		log.Info(head + ": refused: agent is shutting down")
		return
	case a.tun.MaxStreams > 0 && open > int64(a.tun.MaxStreams):
		refuse(st, tunnel.StatusOverloaded, "too many streams on this tunnel")
		log.Warn(fmt.Sprintf("%s: refused: %d streams open on this tunnel (max_streams %d)", head, open-1, a.tun.MaxStreams))
		return
	case svc == nil:
		refuse(st, tunnel.StatusUnknownService, fmt.Sprintf("unknown service %q", req.Service))
		log.Warn(head + ": refused: no such service here")
		return
	}
	if _, ok := svc.allow.Match(t.Peer); !ok {
		refuse(st, tunnel.StatusNotAllowed, "not allowed for "+who)
		log.Warn(fmt.Sprintf("%s: refused: identity not in allow (%v)", head, allowString(svc.allow)))
		return
	}
	ctx, cancel := context.WithTimeout(a.relayCtx, svc.dialTimeout)
	target, err := a.opts.Dial(ctx, "tcp", svc.target)
	cancel()
	if err != nil {
		refuse(st, tunnel.StatusTargetUnreachable, fmt.Sprintf("service %q: target unreachable", req.Service))
		log.Warn(fmt.Sprintf("%s: target %s unreachable: %v", head, svc.target, err))
		return
	}
	if _, err := st.Write(tunnel.AppendStatus(nil, tunnel.Status{Code: tunnel.StatusOK})); err != nil {
		target.Close()
		st.Close()
		return
	}
	log.Debug(head + ": connected to " + svc.target)
	stats, err := tunnel.Relay(a.relayCtx, target, st, nil)
	a.logRelayEnd(log, head+" ("+svc.target+")", stats, err)
}

func refuse(st *yamux.Stream, code tunnel.Code, reason string) {
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	st.Write(tunnel.AppendStatus(nil, tunnel.Status{Code: code, Reason: reason}))
	st.Close()
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
}, head string, stats tunnel.RelayStats, err error) {
	if err == nil {
		log.Debug(head+": closed", "sent", stats.Sent, "received", stats.Received)
		return
	}
	log.Info(fmt.Sprintf("%s: reset: %v", head, err), "sent", stats.Sent, "received", stats.Received)
}

// isClosed reports the errors of a listener that was closed on purpose.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
