package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Per-partner visibility: each stream is followed by a streamRecord from
// the moment its forward or service is known to its end, which writes the
// access log line, counts the stream under its peer and service labels
// and keeps the forward's or service's totals for status.

// otherLabel is the peer or service label of whatever the config does not
// name, so the label values stay bounded.
const otherLabel = "other"

// observe is the agent's per-partner state. The zero value is ready.
type observe struct {
	set       atomic.Pointer[labelSet] // the bounded label values; a reload swaps them
	endpoints sync.Map                 // "forward ADDR" or "service NAME" → *endpointStats
	labels    sync.Map                 // *tunnel.Tunnel → peer label of an accepted tunnel

	streams  *prometheus.CounterVec // by side, peer, service, result
	bytes    *prometheus.CounterVec // by side, peer, service, direction
	open     *prometheus.GaugeVec   // by side, peer, service
	tunnelEv *prometheus.CounterVec // by peer, event (up, down)
}

// labelSet is what the peer and service labels may be: the configured
// identities (allow entries, reverse forwards' via) and service names.
type labelSet struct {
	patterns []identity.Pattern // in config order, "*" last
	services map[string]bool
}

// endpointStats are one forward's or service's stream totals.
type endpointStats struct {
	open, total atomic.Int64
	lastErr     atomic.Pointer[LastError]
}

// LastError is the latest error of a forward or service, and when it came.
type LastError struct {
	Err  string    `json:"err"`
	Time time.Time `json:"time"`
}

// observe is the label set in force: the running config's identities
// and services (see relabel).
func (a *Agent) observe() *labelSet {
	if set := a.obs.set.Load(); set != nil {
		return set
	}
	set := a.labelsOf()
	a.obs.set.CompareAndSwap(nil, set)
	return a.obs.set.Load()
}

// relabel makes the labels follow a reload: identities added to allow
// lists or forwards get labels of their own, removed ones fall back to
// a wider entry or "other", and tunnels are labeled afresh for their next
// streams (a tunnel's up and down keep the label it came up with).
func (a *Agent) relabel() {
	a.mu.Lock()
	set := a.labelsOf()
	a.mu.Unlock()
	a.obs.set.Store(set)
	a.obs.labels.Clear()
}

// labelsOf builds the label set of the running config; a.mu is held, or
// the agent is still being built.
func (a *Agent) labelsOf() *labelSet {
	set := &labelSet{services: map[string]bool{}}
	seen := map[string]bool{}
	add := func(p identity.Pattern) {
		if !seen[p.String()] {
			seen[p.String()] = true
			set.patterns = append(set.patterns, p)
		}
	}
	for _, sc := range a.cfg.Services { // config order: labels do not change between runs
		s := a.services[sc.Name]
		if s == nil {
			continue
		}
		set.services[s.name] = true
		for _, p := range s.allow {
			add(p)
		}
	}
	for _, f := range a.forwards {
		set.services[f.service] = true
		if ps, ok := f.source.(*peerSource); ok {
			add(ps.pattern)
		}
	}
	// "*" matches every peer: try it last, so a peer that a more
	// specific entry names gets that entry as its label.
	slices.SortStableFunc(set.patterns, func(x, y identity.Pattern) int {
		return cmp.Compare(boolInt(x.String() == "*"), boolInt(y.String() == "*"))
	})
	return set
}

// registerPartnerMetrics adds the per-partner metrics to m's registry.
func (a *Agent) registerPartnerMetrics(m *metrics) {
	o := &a.obs
	o.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_peer_streams_total",
		Help: "Streams ended, by side (forward, service), peer (a configured identity or client name, or \"other\"), service and result (ok, reset, refused).",
	}, []string{"side", "peer", "service", "result"})
	o.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_peer_bytes_total",
		Help: "Payload bytes of ended streams, by side, peer, service and direction (sent into the tunnel, received from it).",
	}, []string{"side", "peer", "service", "direction"})
	o.open = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "postern_peer_streams_open",
		Help: "Streams open now, by side, peer and service.",
	}, []string{"side", "peer", "service"})
	o.tunnelEv = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_peer_tunnel_changes_total",
		Help: "Tunnels that came up or went down, by peer and event (up, down).",
	}, []string{"peer", "event"})
	m.registry.MustRegister(o.streams, o.bytes, o.open, o.tunnelEv, &stateCollector{a: a})
}

// peerLabel is the bounded label of a peer: the [[client]] name of a
// dialed tunnel, else the first configured identity (an allow entry or a
// reverse forward's via) its verified chains match, else "other".
func (a *Agent) peerLabel(name string, chains [][]*x509.Certificate) string {
	if name != "" {
		return name
	}
	for _, p := range a.observe().patterns {
		if p.MatchVerified(chains) {
			return p.String()
		}
	}
	return otherLabel
}

// tunnelLabel is peerLabel for a tunnel, remembered while it is up.
func (a *Agent) tunnelLabel(t *tunnel.Tunnel) string {
	if t.Name != "" {
		return t.Name
	}
	if l, ok := a.obs.labels.Load(t); ok {
		return l.(string)
	}
	l := a.peerLabel("", t.Chains)
	if !t.Closed() { // a closed tunnel's entry would never be deleted
		a.obs.labels.Store(t, l)
	}
	return l
}

// tunnelUp counts a tunnel up; the function it returns counts it down.
func (a *Agent) tunnelUp(t *tunnel.Tunnel) (down func()) {
	label := a.tunnelLabel(t)
	a.obs.tunnelEv.WithLabelValues(label, "up").Inc()
	return func() {
		a.obs.tunnelEv.WithLabelValues(label, "down").Inc()
		a.obs.labels.Delete(t)
	}
}

func (a *Agent) serviceLabel(name string) string {
	if a.observe().services[name] {
		return name
	}
	return otherLabel
}

func (a *Agent) endpoint(key string) *endpointStats {
	if e, ok := a.obs.endpoints.Load(key); ok {
		return e.(*endpointStats)
	}
	e, _ := a.obs.endpoints.LoadOrStore(key, &endpointStats{})
	return e.(*endpointStats)
}

// streamRecord follows one stream. begin starts it; exactly one of
// refused or ended finishes it.
type streamRecord struct {
	a       *Agent
	side    string // "forward" or "service"
	peer    string // bounded label
	service string // bounded label
	ep      *endpointStats
	start   time.Time
	attrs   []any // access log attributes the caller's logger lacks (source; on a forward, the peer)
}

// beginStream starts the record of a stream of a forward (key "forward
// ADDR") or service (key "service NAME"); attrs are added to its access
// log line.
func (a *Agent) beginStream(side, key, peer, service string, attrs ...any) *streamRecord {
	r := &streamRecord{a: a, side: side, peer: peer, service: a.serviceLabel(service), ep: a.endpoint(key), start: time.Now(), attrs: attrs}
	r.ep.open.Add(1)
	r.ep.total.Add(1)
	a.obs.open.WithLabelValues(side, r.peer, r.service).Inc()
	return r
}

func (r *streamRecord) finish(result string, sent, received int64, why string) {
	r.ep.open.Add(-1)
	if why != "" {
		r.ep.lastErr.Store(&LastError{Err: why, Time: time.Now()})
	}
	o := &r.a.obs
	o.open.WithLabelValues(r.side, r.peer, r.service).Dec()
	o.streams.WithLabelValues(r.side, r.peer, r.service, result).Inc()
	o.bytes.WithLabelValues(r.side, r.peer, r.service, "sent").Add(float64(sent))
	o.bytes.WithLabelValues(r.side, r.peer, r.service, "received").Add(float64(received))
}

// refused finishes a stream that was refused (the refusal's own warning
// line is its log line).
func (r *streamRecord) refused(reason string) {
	r.finish("refused", 0, 0, "refused: "+reason)
}

// ended finishes a relayed stream and writes its access log line at info
// level: "stream closed" (outcome clean) or "stream reset" (outcome reset,
// reset_by peer, this agent, or the plaintext side: client or target).
// log carries the stream's peer, service, source and target attributes.
func (r *streamRecord) ended(log *slog.Logger, what string, stats relay.Stats, err error) {
	if err == nil {
		r.finish("ok", stats.Sent, stats.Received, "")
	} else {
		r.finish("reset", stats.Sent, stats.Received, err.Error())
	}
	if !log.Enabled(context.Background(), slog.LevelInfo) {
		return // the line's attributes cost more than the rest of the record
	}
	attrs := append(r.attrs, "kind", r.side, "sent", stats.Sent, "received", stats.Received,
		"duration", time.Since(r.start).Round(time.Microsecond).String())
	if err == nil {
		log.Info(what+" closed", append(attrs, "outcome", "clean")...)
		return
	}
	log.Info(what+" reset", append(attrs, "outcome", "reset", "reset_by", r.resetBy(err), "err", err)...)
}

// resetBy says who cut a stream: the peer, the plaintext side of this
// agent (the application's client on a forward, the target on a service),
// or this agent (shutdown, a tunnel it closed).
func (r *streamRecord) resetBy(err error) string {
	var ae *relay.AbortError
	switch {
	case !errors.As(err, &ae):
		return "this agent"
	case ae.ByPeer:
		return "peer"
	case ae.Code == wire.AbortReset && r.side == "forward":
		return "client"
	case ae.Code == wire.AbortReset:
		return "target"
	}
	return "this agent"
}

// peerLabel of a forward: its via, a [[client]] name or the identity of a
// reverse forward's peers.
func (f *forward) peerLabel() string {
	if ps, ok := f.source.(*peerSource); ok {
		return ps.pattern.String()
	}
	return f.via
}

// begin starts the record of a stream the forward opened for c, to the
// peer with certificate peer at addr.
func (f *forward) begin(c net.Conn, peer *x509.Certificate, addr net.Addr) *streamRecord {
	return f.agent.beginStream("forward", "forward "+f.addr, f.peerLabel(), f.service,
		"source", addrValue{c.RemoteAddr()}, "peer", peerValue{peer}, "peer_addr", addrValue{addr})
}

// failed counts a connection the forward reset before a stream opened (no
// tunnel, or the open failed).
func (f *forward) failed(err error) {
	r := f.agent.beginStream("forward", "forward "+f.addr, f.peerLabel(), f.service)
	r.finish("reset", 0, 0, err.Error())
}

// peerLeaf is the verified leaf certificate of a TLS connection.
func peerLeaf(c *tls.Conn) *x509.Certificate {
	if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
		return certs[0]
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
