package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's counters, registered on its own registry (so
// several agents in one process, as in tests and the demo, do not clash).
type metrics struct {
	registry *prometheus.Registry
	streams  *prometheus.CounterVec // by side (forward|service) and result (ok|reset|refused)
	bytes    *prometheus.CounterVec // by direction (sent|received) from the plaintext side's view
	probes   prometheus.Counter     // connections to a tunnel port closed without a byte
	refused  *prometheus.CounterVec // handshakes that did not become tunnels, by cause
}

func (a *Agent) newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_streams_total",
			Help: "Streams ended, by side (forward: opened here; service: accepted here) and result (ok, reset, refused).",
		}, []string{"side", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_bytes_total",
			Help: "Payload bytes relayed, by direction as seen from the plaintext side (sent into the tunnel, received from it).",
		}, []string{"direction"}),
		probes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_tunnel_probes_total",
			Help: "Connections to a tunnel port closed without sending a byte (load balancer health checks); counted, not logged.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_handshake_failures_total",
			Help: "Connections to a tunnel port that did not become tunnels, by cause (busy, source_busy, timeout, not_tls, certificate, rejected, protocol, closed, other).",
		}, []string{"cause"}),
	}
	for _, c := range server.Causes {
		if c != server.CauseProbe {
			m.refused.WithLabelValues(string(c)) // present at 0, so rates work from the first scrape
		}
	}
	m.registry.MustRegister(m.streams, m.bytes, m.probes, m.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_streams_active", Help: "Streams in progress.",
		}, func() float64 { return float64(a.streams.Count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_tunnels_accepted", Help: "Tunnels accepted from peers and up now.",
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(len(a.tunnels))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_tunnels_dialed", Help: "Tunnels this agent dialed and up now.",
		}, func() float64 {
			n := 0
			clients, _ := a.clientMaps()
			for _, c := range clients {
				n += len(c.Tunnels())
			}
			return float64(n)
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.registerPartnerMetrics(m)
	return m
}

// countStream records how a stream ended.
func (m *metrics) countStream(side string, sent, received int64, err error, refused bool) {
	result := "ok"
	switch {
	case refused:
		result = "refused"
	case err != nil:
		result = "reset"
	}
	m.streams.WithLabelValues(side, result).Inc()
	m.bytes.WithLabelValues("sent").Add(float64(sent))
	m.bytes.WithLabelValues("received").Add(float64(received))
}

// countRefused counts a connection to a tunnel port that did not become a
// tunnel: probes on their own counter, the rest by cause.
func (m *metrics) countRefused(cause server.Cause) {
	if cause == server.CauseProbe {
		m.probes.Inc()
		return
	}
	m.refused.WithLabelValues(string(cause)).Inc()
}

// adminHandler serves /healthz (the process answers), /readyz (every
// tunnel this agent dials is up, every service has a target up) and
// /metrics (Prometheus).
func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if missing := a.notReady(); len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", strings.Join(missing, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	a.controlRoutes(mux, true)
	return mux
}

// notReady lists what keeps the agent from being ready: draining, a
// [[client]] (with a tunnel) that has none up, or a [[service]] with no
// target up (see targets.go).
func (a *Agent) notReady() []string {
	var missing []string
	if a.draining.Load() {
		missing = append(missing, "shutting down")
	}
	clients, raw := a.clientMaps()
	for name, c := range clients {
		if !raw[name] && len(c.Tunnels()) == 0 {
			missing = append(missing, fmt.Sprintf("no tunnel %q up", name))
		}
	}
	return append(missing, a.servicesUnreachable()...)
}

// serveAdmin runs the admin endpoint until ctx is done.
func (a *Agent) serveAdmin(ctx context.Context) {
	srv := &http.Server{Handler: a.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(a.admin); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("admin endpoint stopped serving", "listen", a.admin.Addr().String(), "err", err)
	}
}

// AdminAddr is the bound address of the admin endpoint, or nil.
func (a *Agent) AdminAddr() net.Addr {
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}
