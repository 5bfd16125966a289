package agent

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/server"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/prometheus/client_golang/prometheus"
)

// Status is what `postern status` shows of a running agent: GET /status on
// the admin endpoint and the control socket, as JSON.
type Status struct {
	Agent    string          `json:"agent"`
	Config   string          `json:"config"`
	Since    time.Time       `json:"since"`
	Draining bool            `json:"draining"`
	Tunnels  []TunnelStatus  `json:"tunnels"`
	Forwards []ForwardStatus `json:"forwards"`
	Services []ServiceStatus `json:"services"`
	// Refusals are the latest refused tunnel handshakes of every [[server]]:
	// at most one per address and cause, 64 per server, latest first.
	Refusals []server.Refusal `json:"refusals"`
	// Renewals are this agent's certificate files and when each renews
	// (renew.go).
	Renewals []RenewalStatus `json:"renewals"`
}

// TunnelStatus is one tunnel that is up.
type TunnelStatus struct {
	Direction  string    `json:"direction"`        // "dialed" ([[client]]) or "accepted" ([[server]])
	Client     string    `json:"client,omitempty"` // the [[client]] name of a dialed tunnel
	Peer       string    `json:"peer"`             // the peer certificate's identity
	PeerLabel  string    `json:"peer_label"`       // its label in metrics: a client name, a configured identity or "other"
	Addr       string    `json:"addr"`             // the peer's address
	Since      time.Time `json:"since"`
	Streams    int       `json:"streams"` // open now
	Sent       int64     `json:"sent"`    // bytes this side's streams wrote, framing included
	Received   int64     `json:"received"`
	NotAfter   time.Time `json:"not_after"` // the peer certificate's expiry
	TLSVersion string    `json:"tls_version"`
	Retiring   bool      `json:"retiring,omitempty"`
}

// ForwardStatus is one [[forward]].
type ForwardStatus struct {
	Listen  string     `json:"listen"`
	Service string     `json:"service"`
	Via     string     `json:"via"`
	Open    int64      `json:"open"`
	Total   int64      `json:"total"`
	LastErr *LastError `json:"last_error,omitempty"`
}

// ServiceStatus is one [[service]].
type ServiceStatus struct {
	Name    string         `json:"name"`
	Target  string         `json:"target"` // the target the latest stream used (else the first)
	Targets []TargetStatus `json:"targets"`
	Open    int64          `json:"open"`
	Total   int64          `json:"total"`
	LastErr *LastError     `json:"last_error,omitempty"`
}

// Status reports the agent's tunnels, forwards, services and recent
// handshake refusals.
func (a *Agent) Status() Status {
	s := Status{Agent: a.name(), Config: a.cfg.Path, Since: a.started, Draining: a.draining.Load(),
		Tunnels: []TunnelStatus{}, Forwards: []ForwardStatus{}, Services: []ServiceStatus{}, Refusals: []server.Refusal{}}
	for _, t := range a.liveTunnels() {
		s.Tunnels = append(s.Tunnels, a.tunnelStatus(t))
	}
	slices.SortFunc(s.Tunnels, func(x, y TunnelStatus) int {
		return strings.Compare(x.Client+" "+x.Peer+" "+x.Addr, y.Client+" "+y.Peer+" "+y.Addr)
	})
	a.mu.Lock()
	forwards := slices.Clone(a.forwards)
	a.mu.Unlock()
	for _, f := range forwards {
		addr := f.ln.Addr().String()
		e := a.endpoint("forward " + addr)
		s.Forwards = append(s.Forwards, ForwardStatus{Listen: addr, Service: f.service, Via: f.via,
			Open: e.open.Load(), Total: e.total.Load(), LastErr: e.lastErr.Load()})
	}
	for _, sc := range a.snapshot().Services {
		svc := a.service(sc.Name)
		if svc == nil {
			continue
		}
		e := a.endpoint("service " + svc.name)
		s.Services = append(s.Services, ServiceStatus{Name: svc.name, Target: svc.targets.shown().String(), Targets: svc.targets.status(time.Now()),
			Open: e.open.Load(), Total: e.total.Load(), LastErr: e.lastErr.Load()})
	}
	for _, srv := range a.servers {
		s.Refusals = append(s.Refusals, srv.srv.Recent()...)
	}
	slices.SortStableFunc(s.Refusals, func(x, y server.Refusal) int { return y.Last.Compare(x.Last) })
	s.Renewals = a.renewalStatus()
	return s
}

// liveTunnels are the tunnels up now: accepted and dialed.
func (a *Agent) liveTunnels() []*tunnel.Tunnel {
	a.mu.Lock()
	out := make([]*tunnel.Tunnel, 0, len(a.tunnels))
	for t := range a.tunnels {
		out = append(out, t)
	}
	a.mu.Unlock()
	clients, _ := a.clientMaps()
	for _, c := range clients {
		out = append(out, c.Tunnels()...)
	}
	return out
}

func (a *Agent) tunnelStatus(t *tunnel.Tunnel) TunnelStatus {
	sent, received := t.Bytes()
	ts := TunnelStatus{Direction: "accepted", Client: t.Name, Peer: identity.Describe(t.Peer), PeerLabel: a.tunnelLabel(t),
		Addr: t.RemoteAddr().String(), Since: t.Since(), Streams: t.Streams(), Sent: sent, Received: received,
		TLSVersion: tls.VersionName(t.ConnectionState().Version), Retiring: t.Retiring()}
	if t.Name != "" {
		ts.Direction = "dialed"
	}
	if t.Peer != nil {
		ts.NotAfter = t.Peer.NotAfter
	}
	return ts
}

// stateCollector reports, at each scrape, the tunnels up by peer and the
// time left on every certificate: this agent's own, its CAs' and each
// connected peer's.
type stateCollector struct{ a *Agent }

var (
	tunnelsUpDesc = prometheus.NewDesc("postern_peer_tunnels_up",
		"Tunnels up now, by peer (client name, configured identity or \"other\") and direction (dialed, accepted).",
		[]string{"peer", "direction"}, nil)
	certExpiryDesc = prometheus.NewDesc("postern_certificate_expiry_seconds",
		"Seconds until a certificate's not-after (negative once expired), by role (agent: this agent's own; ca: a CA it trusts; peer: the earliest of a connected peer's), subject, and peer label.",
		[]string{"role", "subject", "peer"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tunnelsUpDesc
	ch <- certExpiryDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	now := time.Now()
	type upKey struct{ peer, dir string }
	up := map[upKey]int{}
	peerExpiry := map[string]time.Time{}
	for _, t := range a.liveTunnels() {
		label, dir := a.tunnelLabel(t), "accepted"
		if t.Name != "" {
			dir = "dialed"
		}
		up[upKey{label, dir}]++
		if t.Peer != nil {
			if e, ok := peerExpiry[label]; !ok || t.Peer.NotAfter.Before(e) {
				peerExpiry[label] = t.Peer.NotAfter
			}
		}
	}
	for k, n := range up {
		ch <- prometheus.MustNewConstMetric(tunnelsUpDesc, prometheus.GaugeValue, float64(n), k.peer, k.dir)
	}
	for label, na := range peerExpiry {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, na.Sub(now).Seconds(), "peer", "", label)
	}
	type certKey struct{ role, subject string }
	own := map[certKey]time.Time{}
	note := func(role string, cert *x509.Certificate) {
		k := certKey{role, trust.Subject(cert)}
		if e, ok := own[k]; !ok || cert.NotAfter.Before(e) {
			own[k] = cert.NotAfter
		}
	}
	for _, creds := range a.allCreds() {
		m := creds.Load()
		if m == nil {
			continue
		}
		if m.Leaf != nil {
			note("agent", m.Leaf)
		}
		for _, ca := range m.CAs {
			note("ca", ca)
		}
	}
	for k, na := range own {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, na.Sub(now).Seconds(), k.role, k.subject, "")
	}
}

// allCreds are the credentials of every [[server]] and [[client]].
func (a *Agent) allCreds() []*trust.Credentials {
	var out []*trust.Credentials
	for _, s := range a.servers {
		out = append(out, s.srv.Creds)
	}
	clients, _ := a.clientMaps()
	for _, c := range clients {
		out = append(out, c.Creds)
	}
	return out
}
