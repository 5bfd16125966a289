package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/tunnel"
)

// Limits of a service, per peer and for the service as a whole: streams
// open at once and new streams per second, over which a stream is refused
// (overloaded, with a log line naming the limit and the peer), and
// bandwidth each way, over which a stream is paced. A service without
// limits has a nil *limits.

// maxIdlePeers is how many peers without open streams a service's limits
// keep before forgetting those whose rate state is back to full.
const maxIdlePeers = 1024

type limits struct {
	service string

	maxPerPeer, max int     // 0: off
	ratePerPeer     float64 // streams per second; 0: off
	burst           int     // for ratePerPeer and the service's rate
	starts          *rate.Limiter
	bwPerPeer       int64 // bytes per second each way; 0: off
	bwIn, bwOut     *rate.Limiter

	mu    sync.Mutex
	open  int
	peers map[string]*peerLimits
}

// peerLimits is one peer's state for a service.
type peerLimits struct {
	open        int
	starts      *rate.Limiter
	bwIn, bwOut *rate.Limiter
}

// newLimits returns the limits of a service, or nil when it has none.
func newLimits(sc config.Service) *limits {
	if sc.MaxStreamsPerPeer == 0 && sc.MaxStreams == 0 && sc.StreamsPerSecondPerPeer == 0 &&
		sc.StreamsPerSecond == 0 && sc.BandwidthPerPeer == 0 && sc.Bandwidth == 0 {
		return nil
	}
	l := &limits{
		service:     sc.Name,
		maxPerPeer:  sc.MaxStreamsPerPeer,
		max:         sc.MaxStreams,
		ratePerPeer: sc.StreamsPerSecondPerPeer,
		burst:       sc.StreamsBurst,
		bwPerPeer:   int64(sc.BandwidthPerPeer),
		peers:       map[string]*peerLimits{},
	}
	if sc.StreamsPerSecond > 0 {
		l.starts = rate.NewLimiter(rate.Limit(sc.StreamsPerSecond), streamBurst(sc.StreamsPerSecond, l.burst))
	}
	if sc.Bandwidth > 0 {
		l.bwIn, l.bwOut = newPacer(int64(sc.Bandwidth)), newPacer(int64(sc.Bandwidth))
	}
	return l
}

// streamBurst is the streams a rate lets start at once: streams_burst, or
// one second's worth.
func streamBurst(perSecond float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(math.Ceil(perSecond)))
}

// newPacer limits bytes to perSecond, letting through at most 1/20 s worth
// (and at least 16 KiB) at once, so a paced transfer never runs ahead of
// its rate by more than that.
func newPacer(perSecond int64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), int(max(16<<10, min(perSecond/20, 1<<30))))
}

// admit counts a new stream of peer (its limit key, limitKey) against the
// limits. It returns release, to call when the stream ends, and the
// peer's pacers; or, when a limit is reached, the reason to refuse it.
func (l *limits) admit(peer string) (release func(), pace *pacers, refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[peer]
	if p == nil {
		l.forgetIdle()
		p = &peerLimits{}
		if l.ratePerPeer > 0 {
			p.starts = rate.NewLimiter(rate.Limit(l.ratePerPeer), streamBurst(l.ratePerPeer, l.burst))
		}
		if l.bwPerPeer > 0 {
			p.bwIn, p.bwOut = newPacer(l.bwPerPeer), newPacer(l.bwPerPeer)
		}
		l.peers[peer] = p
	}
	switch {
	case l.maxPerPeer > 0 && p.open >= l.maxPerPeer:
		return nil, nil, fmt.Sprintf("max_streams_per_peer (%d) reached for %s", l.maxPerPeer, peer)
	case l.max > 0 && l.open >= l.max:
		return nil, nil, fmt.Sprintf("max_streams (%d) reached for service %s", l.max, l.service)
	}
	now := time.Now()
	var mine *rate.Reservation
	if p.starts != nil {
		if mine = p.starts.ReserveN(now, 1); mine.DelayFrom(now) > 0 {
			mine.CancelAt(now)
			return nil, nil, fmt.Sprintf("streams_per_second_per_peer (%s) exceeded by %s", formatRate(l.ratePerPeer), peer)
		}
	}
	if l.starts != nil {
		if all := l.starts.ReserveN(now, 1); all.DelayFrom(now) > 0 {
			all.CancelAt(now)
			if mine != nil {
				mine.CancelAt(now)
			}
			return nil, nil, fmt.Sprintf("streams_per_second (%s) exceeded for service %s", formatRate(float64(l.starts.Limit())), l.service)
		}
	}
	p.open++
	l.open++
	var once sync.Once
	release = func() {
		once.Do(func() {
			l.mu.Lock()
			p.open--
			l.open--
			l.mu.Unlock()
		})
	}
	return release, &pacers{in: []*rate.Limiter{p.bwIn, l.bwIn}, out: []*rate.Limiter{p.bwOut, l.bwOut}}, ""
}

// forgetIdle drops, once many peers are known, those with no open stream
// whose rate state is full again: forgetting them changes nothing.
func (l *limits) forgetIdle() {
	if len(l.peers) < maxIdlePeers {
		return
	}
	now := time.Now()
	full := func(r *rate.Limiter) bool { return r == nil || r.TokensAt(now) >= float64(r.Burst()) }
	for k, p := range l.peers {
		if p.open == 0 && full(p.starts) && full(p.bwIn) && full(p.bwOut) {
			delete(l.peers, k)
		}
	}
}

func formatRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// limitKey is the identity a peer's limits are kept under: label, the
// name its streams have in the access log and metrics (a [[client]] name,
// or the allow entry it matched), unless that label stands for many peers
// (a wildcard, or "other"): then the peer's own name, from its
// certificate leaf.
func limitKey(label string, leaf *x509.Certificate) string {
	if leaf == nil || (label != otherLabel && !strings.Contains(label, "*")) {
		return label
	}
	ids := identity.NameIdentities(leaf)
	for _, id := range ids {
		if strings.HasPrefix(id, identity.KindDNS+":") {
			return id
		}
	}
	if len(ids) > 0 {
		return ids[0]
	}
	return identity.KindSPKI + ":" + identity.SPKIHash(leaf)
}

// pacers are the bandwidth limiters a stream's bytes pass, each way: the
// peer's and the service's (nil entries are off).
type pacers struct{ in, out []*rate.Limiter }

func (p *pacers) on() bool {
	for _, r := range append(p.in, p.out...) {
		if r != nil {
			return true
		}
	}
	return false
}

// wait takes n bytes from each limiter in ls, waiting as needed.
func wait(ctx context.Context, ls []*rate.Limiter, n int) error {
	for _, r := range ls {
		if r == nil {
			continue
		}
		for left := n; left > 0; {
			chunk := min(left, r.Burst())
			if err := r.WaitN(ctx, chunk); err != nil {
				return err
			}
			left -= chunk
		}
	}
	return nil
}

// pacedStream is a stream whose bytes each way are paced: what the peer
// sends (in, read here) and what goes back to it (out, written here). The
// stream's other methods (Reset, CloseWrite...) are its own.
type pacedStream struct {
	*tunnel.Stream
	ctx  context.Context
	pace *pacers
}

func (s *pacedStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	if n > 0 {
		if werr := wait(s.ctx, s.pace.in, n); werr != nil && err == nil {
			err = fmt.Errorf("pace stream: %w", werr)
		}
	}
	return n, err
}

// SetDeliver does not pass the function on: data handed over on the
// tunnel's receive goroutine would skip Read's pacing, so a paced stream's
// data is all read (WaitDeliver then waits as a plain read does).
func (s *pacedStream) SetDeliver(func([]byte) int) {}

func (s *pacedStream) Write(b []byte) (int, error) {
	if err := wait(s.ctx, s.pace.out, len(b)); err != nil {
		return 0, fmt.Errorf("pace stream: %w", err)
	}
	return s.Stream.Write(b)
}

// admit counts a new stream of t's peer against s's limits (see
// limits.admit); a service without limits admits every stream.
func (s *service) admit(a *Agent, t *tunnel.Tunnel) (release func(), pace *pacers, refused string) {
	if s.limits == nil {
		return func() {}, nil, ""
	}
	return s.limits.admit(limitKey(a.tunnelLabel(t), t.Peer))
}

// admitRaw is admit for a raw TLS connection (mux = false), whose verified
// chains are chains: its stream limits apply, not its bandwidth.
func (s *service) admitRaw(a *Agent, chains [][]*x509.Certificate) (release func(), refused string) {
	if s.limits == nil || len(chains) == 0 {
		return func() {}, ""
	}
	release, _, refused = s.limits.admit(limitKey(a.peerLabel("", chains), chains[0][0]))
	return release, refused
}

// paced is st, paced by p when a bandwidth limit applies.
func (a *Agent) paced(st *tunnel.Stream, p *pacers) net.Conn {
	if p == nil || !p.on() {
		return st
	}
	return &pacedStream{Stream: st, ctx: a.relayCtx, pace: p}
}
