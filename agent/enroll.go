package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/postern-tunnel/postern/config"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/server"
	"github.com/postern-tunnel/postern/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Enrollment bounds on the hub, after the TLS handshake (whose own bounds
// are the [[server]]'s): the time for the request and the response, and
// how many enrollments run at once (more are answered "unavailable").
const (
	EnrollTimeout  = 10 * time.Second
	MaxEnrollments = 8
)

// enrollHub is an agent with [ca]: it redeems invitations on its
// [[server]] listeners (server.Enrollment). Only pki reads the CA folder's
// key, once per redemption.
type enrollHub struct {
	ca    config.CA
	log   *slog.Logger
	slots chan struct{}
	// timeout is EnrollTimeout (nanoseconds); tests shorten it.
	timeout atomic.Int64
	// results counts enrollments by result: ok or the refusal's code
	// (wire.EnrollCode names), and timeout.
	results *prometheus.CounterVec

	mu     sync.Mutex
	conns  map[*tls.Conn]struct{} // enrollments in progress, closed by stop
	closed bool                   // stop ran: new enrollment connections are closed at once
	wg     sync.WaitGroup
	// received, if set (tests), sees each request as read off the wire.
	received atomic.Pointer[func(wire.EnrollRequest)]
}

// setupEnroll makes the agent a registration authority when it has [ca],
// refusing to start when the CA certificate cannot be read.
func (a *Agent) setupEnroll() error {
	if a.cfg.CA == nil {
		return nil
	}
	ca := *a.cfg.CA
	data, err := os.ReadFile(filepath.Join(ca.Dir, capki.CertFile))
	if err == nil {
		_, err = capki.ParseCertPEM(data)
	}
	if err != nil {
		return fmt.Errorf("%s: [ca] dir %s: %w (make it with `postern pki init --dir %s`)", a.where(0), ca.Dir, err, ca.Dir)
	}
	a.enroll = &enrollHub{ca: ca, log: a.log, slots: make(chan struct{}, MaxEnrollments), conns: map[*tls.Conn]struct{}{}}
	a.enroll.timeout.Store(int64(EnrollTimeout))
	a.enroll.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_enrollments_total",
		Help: "Enrollment requests on the tunnel ports, by result: ok, or why refused (used, expired, tampered, unknown-invitation, not-granted, key-type, bad-request, malformed, unavailable, timeout).",
	}, []string{"result"})
	for c := wire.EnrollOK; c <= wire.EnrollUnavailable; c++ {
		a.enroll.results.WithLabelValues(c.String()) // present at 0
	}
	a.metrics.registry.MustRegister(a.enroll.results)
	return nil
}

// enrollment is the [[server]] hook, nil without [ca].
func (a *Agent) enrollment() *server.Enrollment {
	if a.enroll == nil {
		return nil
	}
	return &server.Enrollment{CA: a.enroll.caDER, Handle: a.enroll.serve}
}

// caDER reads the CA certificate for each enrollment handshake, so a CA
// folder replaced while running is presented at once.
func (h *enrollHub) caDER() []byte {
	data, err := os.ReadFile(filepath.Join(h.ca.Dir, capki.CertFile))
	if err != nil {
		return nil
	}
	cert, err := capki.ParseCertPEM(data)
	if err != nil {
		return nil
	}
	return cert.Raw
}

// stopEnroll closes the enrollment connections in progress and waits for
// their handlers (a signature under way finishes first); the agent calls
// it when it drains.
func (a *Agent) stopEnroll() {
	h := a.enroll
	if h == nil {
		return
	}
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// track registers c until the returned func runs; false when the agent
// is stopping (c is then closed).
func (h *enrollHub) track(c *tls.Conn) (untrack func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.Close()
		return nil, false
	}
	h.wg.Add(1)
	h.conns[c] = struct{}{}
	return func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		h.wg.Done()
	}, true
}

// serve answers one enrollment connection: one request, one response.
func (h *enrollHub) serve(c *tls.Conn) {
	untrack, ok := h.track(c)
	if !ok {
		return
	}
	defer untrack()
	defer c.Close()
	peer := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(time.Duration(h.timeout.Load())))
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		h.results.WithLabelValues(wire.EnrollUnavailable.String()).Inc()
		h.log.Warn("enrollment refused", "peer_addr", peer, "cause", wire.EnrollUnavailable.String(), "reason", fmt.Sprintf("%d enrollments in progress", MaxEnrollments))
		h.answer(c, wire.EnrollResponse{Code: wire.EnrollUnavailable, Reason: "the hub is busy with other enrollments: try again in a minute"})
		return
	}
	h.log.Debug("enrollment connection", "peer_addr", peer)
	counted := &countingReader{r: c}
	req, err := wire.ReadEnrollRequest(counted)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		h.results.WithLabelValues("timeout").Inc()
		h.log.Warn("enrollment refused", "peer_addr", peer, "cause", "timeout", "reason", fmt.Sprintf("no whole request within %s; connection closed", time.Duration(h.timeout.Load())))
		return
	}
	if err != nil {
		h.results.WithLabelValues(wire.EnrollMalformed.String()).Inc()
		h.log.Warn("enrollment refused", "peer_addr", peer, "cause", wire.EnrollMalformed.String(), "reason", err.Error())
		h.answer(c, wire.EnrollResponse{Code: wire.EnrollMalformed, Reason: clip("request does not parse: " + err.Error())})
		return
	}
	if f := h.received.Load(); f != nil {
		(*f)(req)
	}
	id, asked := describeRequest(req)
	attrs := []any{"peer_addr", peer, "invitation", id, "identities", asked, "request_bytes", counted.n}
	g, err := capki.Redeem(h.ca.Dir, req.Token, req.CSR, capki.RedeemOptions{
		Source: peer, Bound: h.ca.Identities, KeyTypes: h.ca.KeyTypes, MaxValidity: h.ca.Validity.D(),
	})
	var ref *capki.Refusal
	switch {
	case errors.As(err, &ref):
		h.results.WithLabelValues(wire.EnrollCodeOf(ref.Code).String()).Inc()
		h.log.Warn("enrollment refused", append(attrs, "cause", ref.Code, "reason", ref.Reason)...)
		h.answer(c, wire.EnrollResponse{Code: wire.EnrollCodeOf(ref.Code), Reason: clip(ref.Reason)})
	case err != nil:
		h.results.WithLabelValues(wire.EnrollUnavailable.String()).Inc()
		h.log.Error("enrollment failed: the CA could not sign", append(attrs, "ca_dir", h.ca.Dir, "err", err)...)
		h.answer(c, wire.EnrollResponse{Code: wire.EnrollUnavailable, Reason: "the hub could not sign now; its operator's log says why"})
	default:
		h.results.WithLabelValues(wire.EnrollOK.String()).Inc()
		h.log.Info("enrollment granted", append(attrs, "serial", capki.FormatSerial(g.Cert.SerialNumber), "not_after", g.Cert.NotAfter.UTC().Format(time.RFC3339))...)
		h.answer(c, wire.EnrollResponse{Code: wire.EnrollOK, Chain: g.ChainPEM, CA: g.CAPEM})
	}
}

// describeRequest names the invitation and the identities asked for, for
// the log, as far as they parse.
func describeRequest(req wire.EnrollRequest) (id string, asked []string) {
	id = "?"
	if t, err := capki.ParseToken(req.Token); err == nil {
		id = t.IDString()
	}
	if csr, err := x509.ParseCertificateRequest(req.CSR); err == nil {
		asked = capki.Names{CommonName: csr.Subject.CommonName, OrganizationalUnit: csr.Subject.OrganizationalUnit,
			DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, URIs: csr.URIs}.IdentityStrings()
	}
	return id, asked
}

func (h *enrollHub) answer(c *tls.Conn, resp wire.EnrollResponse) {
	b, err := wire.AppendEnrollResponse(nil, resp)
	if err != nil {
		h.log.Error("enrollment answer", "err", err)
		return
	}
	c.Write(b)
}

// clip keeps a reason within the wire's bound and its printable text.
func clip(s string) string {
	if len(s) > wire.MaxEnrollReason {
		s = s[:wire.MaxEnrollReason-3] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
