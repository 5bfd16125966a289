package agent

import (
	"fmt"
	"time"

	"github.com/postern-tunnel/postern/tunnel"
)

// A reverse forward whose peer has been gone for longer than tunnel_wait
// resets new connections at once, saying why, instead of making each one
// wait tunnel_wait for a peer that is not coming. A peer that was there
// moments ago may be reconnecting: until it has been gone for tunnel_wait,
// connections wait for it as usual, and they do again as soon as it is
// back.

// absence is how long a reverse forward's peers have been away. Its
// fields are guarded by Agent.mu.
type absence struct {
	wait  time.Duration // the forward's tunnel_wait
	since time.Time     // when the last matching peer left, or the agent started
}

// errPeerGone is why a reverse forward reset a connection at once.
type errPeerGone struct {
	peer         string
	absent, wait time.Duration
}

func (e *errPeerGone) Error() string {
	return fmt.Sprintf("peer %s not connected for %s (tunnel_wait %s): connections are reset until it connects again",
		e.peer, e.absent.Round(time.Second), e.wait)
}

// longGone returns an *errPeerGone when no tunnel of a peer matching p is
// up (retiring ones included) and none has been for longer than
// tunnel_wait; else nil. Called with agent.mu held.
func (p *peerSource) longGone() error {
	for t := range p.agent.tunnels {
		if p.pattern.MatchVerified(t.Chains) {
			return nil
		}
	}
	if gone := time.Since(p.since); gone > p.wait {
		return &errPeerGone{peer: p.pattern.String(), absent: gone, wait: p.wait}
	}
	return nil
}

// peerLeft notes, for each reverse forward whose peers t matched, when the
// last of them left. Called with a.mu held, t already removed.
func (a *Agent) peerLeft(t *tunnel.Tunnel) {
	now := time.Now()
	for _, f := range a.forwards {
		p, ok := f.source.(*peerSource)
		if !ok || !p.pattern.MatchVerified(t.Chains) {
			continue
		}
		// Counted only while no other matching tunnel is up; when one
		// is, this is overwritten as it leaves.
		p.since = now
	}
}
