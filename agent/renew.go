package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern-tunnel/postern/identity"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Renewal: at renew_before before expiry (default: when a third of the
// lifetime is left) this agent makes a fresh key and has its certificate
// renewed, by its own [ca] when that CA issued it (no network), or over a
// live tunnel by a peer whose [ca] did (docs/certificates.md, "Renewal
// over the tunnel"). It replaces key and certificate together, both or
// neither (capki.ReplacePair), and reloads them at once: new tunnels
// present the new certificate, live tunnels and their streams carry on.

// Bounds of the renewal loop.
const (
	renewBackoffMin = time.Second
	renewBackoffMax = 5 * time.Minute
	renewIdle       = time.Minute // the loop looks again at least this often
)

// renewal is the agent's renewal state, both sides. The zero value is
// ready once init has run.
type renewal struct {
	clock  func() time.Time // nil: time.Now; tests move it
	signMu sync.Mutex       // one signing at a time: the [ca] index is rewritten whole

	// successors are the chains this agent's [ca] renewed a tunnel's peer
	// to, by tunnel: live tunnels are rechecked with them.
	successors sync.Map // *tunnel.Tunnel → []*x509.Certificate
	// peerCA is what each tunnel's peer signs renewals with (ca.info), or
	// nil when it signs none.
	peerCA sync.Map // *tunnel.Tunnel → *x509.Certificate
	// lastSigned is when this agent's [ca] last renewed over each tunnel.
	lastSigned sync.Map // *tunnel.Tunnel → time.Time

	once    sync.Once
	wake    chan struct{}
	waiting atomic.Bool            // a renewal waits for a tunnel to come up
	own     *prometheus.CounterVec // this agent's renewals, by result
	signed  *prometheus.CounterVec // renewals this agent's [ca] decided on, by result
	mu      sync.Mutex
	targets map[string]*renewTarget // by certificate file
}

// renewTarget is one certificate file this agent renews.
type renewTarget struct {
	cert, key string
	before    time.Duration // renew_before; 0 = a third of the lifetime
	endpoints []string

	renewAt, notAfter time.Time
	serial            string
	via               string // how the last renewal went: `local [ca] DIR`, `tunnel hub (addr)`
	lastOK, lastTry   time.Time
	lastErr           string
	retryAt           time.Time
	backoff           time.Duration
	failures          int // failed attempts since the last renewal (waiting for a signer does not count)
	renewals          int
	gotSerial         string // serial of the last certificate this loop obtained
	waitTunnel        bool   // due, and waiting for a tunnel to come up
}

func (r *renewal) now() time.Time {
	if r.clock != nil {
		return r.clock()
	}
	return time.Now()
}

func (r *renewal) init(a *Agent) {
	r.once.Do(func() {
		r.wake = make(chan struct{}, 1)
		r.targets = map[string]*renewTarget{}
		r.own = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_cert_renewal_total",
			Help: "Renewals of this agent's certificates, by result (renewed, failed).",
		}, []string{"result"})
		r.signed = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_cert_renewal_signed_total",
			Help: "Renewals peers asked this agent's [ca] for, by result (signed, refused).",
		}, []string{"result"})
		for _, v := range []string{"renewed", "failed"} {
			r.own.WithLabelValues(v)
		}
		for _, v := range []string{"signed", "refused"} {
			r.signed.WithLabelValues(v)
		}
		a.metrics.registry.MustRegister(r.own, r.signed, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_cert_renewal_next_seconds",
			Help: "Seconds until the next renewal of one of this agent's certificates is due (negative: overdue, being retried); absent without any.",
		}, func() float64 {
			next, ok := r.nextDue()
			if !ok {
				return 0
			}
			return time.Until(next).Seconds()
		}))
	})
}

// poke makes the loop look again now (a test).
func (r *renewal) poke() {
	if r.wake == nil {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *renewal) nextDue() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	for _, tg := range r.targets {
		at := tg.renewAt
		if tg.retryAt.After(at) {
			at = tg.retryAt
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// tunnelUp wakes the loop when a renewal waits for a tunnel; otherwise a
// new tunnel costs nothing here.
func (r *renewal) tunnelUp() {
	if r.waiting.CompareAndSwap(true, false) {
		r.poke()
	}
}

func (r *renewal) successor(t *tunnel.Tunnel) []*x509.Certificate {
	if c, ok := r.successors.Load(t); ok {
		return c.([]*x509.Certificate)
	}
	return nil
}

// peerLeaf is the certificate a live tunnel's peer holds now: the one it
// renewed to over the tunnel, else the one it presented.
func (a *Agent) peerLeaf(t *tunnel.Tunnel) *x509.Certificate {
	if c := a.renew.successor(t); len(c) > 0 {
		return c[0]
	}
	return t.Peer
}

func (r *renewal) setSuccessor(t *tunnel.Tunnel, chain []*x509.Certificate) {
	r.successors.Store(t, chain)
}

// prune forgets what it knew of tunnels that have closed.
func (r *renewal) prune() {
	for _, m := range []*sync.Map{&r.successors, &r.peerCA, &r.lastSigned} {
		m.Range(func(k, _ any) bool {
			if k.(*tunnel.Tunnel).Closed() {
				m.Delete(k)
			}
			return true
		})
	}
}

// startRenewal runs the renewal loop until ctx is done; the function it
// returns waits for the loop to stop.
func (a *Agent) startRenewal(ctx context.Context) (wait func()) {
	a.renew.init(a)
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			case <-a.renew.wake:
			}
			next := a.renewDue(ctx)
			timer.Reset(max(time.Until(next), 10*time.Millisecond))
		}
	}()
	return func() { <-done }
}

// renewTargets lists the certificate files of this agent's [[server]]s and
// [[client]]s with their renew_before (the shortest, when several share a
// file). Keys in a PKCS#11 token are not renewed: their key is made there.
func (a *Agent) renewTargets() map[string]*renewTarget {
	cfg := a.snapshot()
	out := map[string]*renewTarget{}
	add := func(where, cert, key string, before time.Duration) {
		if cert == "" || strings.HasPrefix(cert, "pkcs11:") || strings.HasPrefix(key, "pkcs11:") {
			return
		}
		if cfg.ACME != nil && cert == cfg.ACME.CertPath() {
			return // [acme] renews it (acme.go)
		}
		tg := out[cert]
		if tg == nil {
			tg = &renewTarget{cert: cert, key: key, before: before}
			out[cert] = tg
		}
		if before > 0 && (tg.before == 0 || before < tg.before) {
			tg.before = before
		}
		tg.endpoints = append(tg.endpoints, where)
	}
	for _, s := range cfg.Servers {
		add("server "+string(s.Listen), s.Cert, s.Key, s.RenewBefore.D())
	}
	for _, c := range cfg.Clients {
		add(fmt.Sprintf("client %q", c.Name), c.Cert, c.Key, c.RenewBefore.D())
	}
	return out
}

// currentLeaf is the certificate in use for file cert.
func (a *Agent) currentLeaf(cert string) *x509.Certificate {
	a.certs.mu.Lock()
	defer a.certs.mu.Unlock()
	a.certs.setup(a)
	for _, e := range a.certs.endpoints {
		if m := e.creds.Load(); m.Files.Cert == cert {
			return m.Leaf
		}
	}
	return nil
}

// renewAt is when leaf is due for renewal.
func renewAt(leaf *x509.Certificate, before time.Duration) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if before <= 0 || before >= life {
		before = life / 3
	}
	return leaf.NotAfter.Add(-before)
}

// renewDue renews what is due and returns when to look again.
func (a *Agent) renewDue(ctx context.Context) time.Time {
	r := &a.renew
	r.prune()
	now := r.now()
	next := now.Add(renewIdle)
	fresh := a.renewTargets()
	r.mu.Lock()
	for cert, tg := range fresh {
		if old := r.targets[cert]; old != nil {
			old.key, old.before, old.endpoints = tg.key, tg.before, tg.endpoints
			fresh[cert] = old
		}
	}
	r.targets = fresh
	targets := make([]*renewTarget, 0, len(fresh))
	for _, tg := range fresh {
		targets = append(targets, tg)
	}
	r.mu.Unlock()
	for _, tg := range targets {
		if ctx.Err() != nil {
			return next
		}
		leaf := a.currentLeaf(tg.cert)
		if leaf == nil {
			continue
		}
		r.mu.Lock()
		tg.notAfter, tg.serial = leaf.NotAfter, leaf.SerialNumber.Text(16)
		tg.renewAt = renewAt(leaf, tg.before)
		if tg.gotSerial == tg.serial && !tg.renewAt.After(tg.lastOK) {
			// The certificate just obtained is due at once: renew_before
			// is as long as the validity the CA gives. Wait halfway to its
			// expiry rather than renew without end.
			tg.renewAt = tg.lastOK.Add(tg.notAfter.Sub(tg.lastOK) / 2)
		}
		due := tg.renewAt
		if tg.retryAt.After(due) && !(tg.waitTunnel && len(a.liveTunnels()) > 0) {
			due = tg.retryAt
		}
		r.mu.Unlock()
		if now.Before(due) {
			if due.Before(next) {
				next = due
			}
			continue
		}
		a.renewOne(tg, leaf, now)
		return now // look again at once: the reload changed the leaf
	}
	// Wall-clock timers: a test clock that moves ahead is seen within idle.
	if r.clock != nil && next.Sub(now) > time.Second {
		next = now.Add(time.Second)
	}
	return time.Now().Add(next.Sub(now))
}

// renewOne renews tg's certificate once and records how it went.
func (a *Agent) renewOne(tg *renewTarget, leaf *x509.Certificate, now time.Time) {
	r := &a.renew
	start := time.Now()
	via, fresh, err := a.renewCert(tg, leaf, now)
	r.mu.Lock()
	defer r.mu.Unlock()
	tg.lastTry = now
	tg.waitTunnel = false
	if errors.Is(err, errNoSigner) || errors.Is(err, errNoTunnel) {
		// A certificate from an outside CA, or no tunnel up yet: say so
		// once, look again when a tunnel comes up or in a while. (The
		// expiry warnings still name the certificate as it nears expiry.)
		if tg.lastErr != err.Error() && errors.Is(err, errNoSigner) {
			a.log.Info("certificate is due for renewal, but no connected peer signs for its issuer; renew it where it was issued",
				"cert", tg.cert, "serial", leaf.SerialNumber.Text(16), "expires_in", trust.RoundDuration(leaf.NotAfter.Sub(now)), "reason", err.Error())
		} else if tg.lastErr != err.Error() {
			a.log.Info("certificate renewal waits for a tunnel", "cert", tg.cert, "serial", leaf.SerialNumber.Text(16),
				"expires_in", trust.RoundDuration(leaf.NotAfter.Sub(now)))
		}
		tg.lastErr, tg.retryAt, tg.backoff, tg.failures = err.Error(), now.Add(renewIdle), 0, 0
		tg.waitTunnel = errors.Is(err, errNoTunnel)
		if tg.waitTunnel {
			r.waiting.Store(true)
			if len(a.liveTunnels()) > 0 { // one came up meanwhile
				r.tunnelUp()
			}
		}
		return
	}
	if err != nil {
		r.own.WithLabelValues("failed").Inc()
		tg.lastErr = err.Error()
		tg.failures++
		tg.backoff = min(max(2*tg.backoff, renewBackoffMin), renewBackoffMax)
		if left := leaf.NotAfter.Sub(now); left > 0 && tg.backoff > left/4 {
			tg.backoff = max(left/4, renewBackoffMin)
		}
		tg.retryAt = now.Add(tg.backoff)
		a.log.Warn("certificate renewal failed; retrying", "cert", tg.cert, "serial", leaf.SerialNumber.Text(16),
			"expires_in", trust.RoundDuration(leaf.NotAfter.Sub(now)), "not_after", stamp(leaf.NotAfter),
			"retry_in", tg.backoff.String(), "err", err.Error())
		return
	}
	r.own.WithLabelValues("renewed").Inc()
	tg.lastErr, tg.backoff, tg.retryAt, tg.failures = "", 0, time.Time{}, 0
	tg.lastOK, tg.via, tg.gotSerial = now, via, fresh.SerialNumber.Text(16)
	tg.serial, tg.notAfter, tg.renewAt = tg.gotSerial, fresh.NotAfter, renewAt(fresh, tg.before)
	tg.renewals++
	a.log.Info("certificate renewed", "cert", tg.cert, "serial", fresh.SerialNumber.Text(16), "was_serial", leaf.SerialNumber.Text(16),
		"not_after", stamp(fresh.NotAfter), "via", via, "took", time.Since(start).Round(time.Millisecond).String())
}

// renewCert makes a fresh key, has a certificate with leaf's identities
// signed for it, writes both and reloads them. It returns how it was
// signed and the new certificate.
func (a *Agent) renewCert(tg *renewTarget, leaf *x509.Certificate, now time.Time) (string, *x509.Certificate, error) {
	key, err := capki.GenerateKey(keyTypeOf(leaf.PublicKey))
	if err != nil {
		return "", nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: leaf.Subject.CommonName, OrganizationalUnit: leaf.Subject.OrganizationalUnit},
		DNSNames: leaf.DNSNames, IPAddresses: leaf.IPAddresses, URIs: leaf.URIs,
	}, key)
	if err != nil {
		return "", nil, fmt.Errorf("make certificate request: %w", err)
	}
	via, chainPEM, err := a.obtainRenewal(leaf, csr, now)
	if err != nil {
		return via, nil, err
	}
	fresh, err := checkRenewed(chainPEM, leaf, key.Public())
	if err != nil {
		return via, nil, fmt.Errorf("renewal from %s: %w", via, err)
	}
	keyPEM, err := capki.MarshalKeyPEM(key)
	if err != nil {
		return via, nil, err
	}
	// Both or neither: a key without its certificate on disk would stop
	// the next start. Between the two renames a reload sees a pair that
	// does not match and keeps the material in use.
	if err := capki.ReplacePair(tg.key, keyPEM, tg.cert, chainPEM); err != nil {
		return via, nil, fmt.Errorf("renewed certificate (serial %s) not used: %w; the agent keeps the pair in use", fresh.SerialNumber.Text(16), err)
	}
	a.reloadCertFile(tg.cert)
	a.announceRenewal(key, chainPEM, fresh)
	return via, fresh, nil
}

// obtainRenewal has csr signed: by the local [ca] when it issued leaf,
// otherwise over the first live tunnel whose peer signs for leaf's issuer.
func (a *Agent) obtainRenewal(leaf *x509.Certificate, csr []byte, now time.Time) (string, []byte, error) {
	if cc := a.snapshot().CA; cc != nil {
		if ca, err := capki.Open(cc.Dir); err == nil && leaf.CheckSignatureFrom(ca.Cert) == nil {
			via := "local [ca] " + cc.Dir
			chain, _, refusal := a.signRenewal(leaf, csr, now, true)
			if refusal != nil {
				return via, nil, fmt.Errorf("%s: %s", via, refusal.reason)
			}
			return via, chain, nil
		}
	}
	var errs []string
	asked, answered := 0, 0
	tunnels := a.renewalTunnels()
	for _, t := range tunnels {
		caCert, known := a.peerCAOf(t)
		if known {
			answered++
		}
		if caCert == nil || leaf.CheckSignatureFrom(caCert) != nil {
			continue
		}
		asked++
		via := tunnelName(t)
		chain, err := askPeer(t, wire.OpCertRenew, csr)
		if err == nil {
			return via, chain, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", via, err))
	}
	if asked == 0 && answered > 0 && answered == len(tunnels) {
		return "", nil, fmt.Errorf("%w: none of the %d connected peers signs renewals for %s (issuer %s) with its [ca]", errNoSigner, answered, trust.Subject(leaf), leaf.Issuer)
	}
	if len(tunnels) == 0 {
		return "", nil, fmt.Errorf("%w: renewing %s needs a live tunnel to the agent whose [ca] issued it", errNoTunnel, trust.Subject(leaf))
	}
	if asked == 0 {
		return "", nil, fmt.Errorf("no connected peer signs for %s (issuer %s) yet: renewal needs a live tunnel to an agent whose [ca] issued it", trust.Subject(leaf), leaf.Issuer)
	}
	return "", nil, errors.New(strings.Join(errs, "; "))
}

// renewalTunnels are the live tunnels, dialed ones first.
func (a *Agent) renewalTunnels() []*tunnel.Tunnel {
	ts := a.liveTunnels()
	slices.SortStableFunc(ts, func(x, y *tunnel.Tunnel) int {
		switch {
		case x.Name != "" && y.Name == "":
			return -1
		case x.Name == "" && y.Name != "":
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	return ts
}

func tunnelName(t *tunnel.Tunnel) string {
	if t.Name != "" {
		return fmt.Sprintf("tunnel %s (%s)", t.Name, t.RemoteAddr())
	}
	return fmt.Sprintf("tunnel from %s (%s)", identity.Describe(t.Peer), t.RemoteAddr())
}

// errNoSigner says no connected peer signs for a certificate's issuer: it
// comes from elsewhere (an outside CA), and Postern leaves it alone.
var errNoSigner = errors.New("not renewed by Postern")

// errNoTunnel says a renewal waits for a tunnel to come up.
var errNoTunnel = errors.New("no tunnel is up")

// peerCAOf asks t's peer, once per tunnel, which CA it signs renewals
// with; known reports whether the peer has answered.
func (a *Agent) peerCAOf(t *tunnel.Tunnel) (ca *x509.Certificate, known bool) {
	if c, ok := a.renew.peerCA.Load(t); ok {
		return c.(*x509.Certificate), true
	}
	der, err := askPeer(t, wire.OpCAInfo, nil)
	var ce *wire.ControlError
	switch {
	case err == nil:
		c, perr := x509.ParseCertificate(der)
		if perr != nil {
			a.log.Warn("peer's CA certificate does not parse", "tunnel", tunnelName(t), "err", perr)
			c = nil
		}
		a.renew.peerCA.Store(t, c)
		return c, true
	case errors.As(err, &ce), errors.Is(err, wire.ErrControlUnsupported):
		a.renew.peerCA.Store(t, (*x509.Certificate)(nil)) // it signs none: do not ask again
		return nil, true
	default:
		a.log.Debug("peer did not say which CA it signs with", "tunnel", tunnelName(t), "err", err)
	}
	return nil, false
}

// checkRenewed parses the chain a renewal returned and checks it is for
// pub with exactly old's identities.
func checkRenewed(chainPEM []byte, old *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the answer holds no PEM certificate")
	}
	fresh, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the new certificate does not parse: %w", err)
	}
	want, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(fresh.RawSubjectPublicKeyInfo, want) {
		return nil, errors.New("the new certificate is not for the key this agent made")
	}
	if !slices.Equal(identity.NameIdentities(fresh), identity.NameIdentities(old)) {
		return nil, fmt.Errorf("the new certificate carries [%s], not [%s]", strings.Join(identity.NameIdentities(fresh), ", "), strings.Join(identity.NameIdentities(old), ", "))
	}
	if !bytes.Equal(fresh.RawIssuer, old.RawIssuer) {
		return nil, fmt.Errorf("the new certificate is from %s, not %s", fresh.Issuer, old.Issuer)
	}
	return fresh, nil
}

// reloadCertFile reloads at once the endpoints whose certificate is in
// path, and rechecks their tunnels.
func (a *Agent) reloadCertFile(path string) {
	w := &a.certs
	w.mu.Lock()
	defer w.mu.Unlock()
	w.setup(a)
	var changed []*certEndpoint
	for _, e := range w.endpoints {
		if e.creds.Load().Files.Cert != path {
			continue
		}
		if c, _ := w.reload(a, e, true); c {
			changed = append(changed, e)
		}
	}
	if len(changed) > 0 {
		a.recheckTunnels(changed, time.Now())
	}
}

// RenewalStatus is one certificate file the agent renews.
type RenewalStatus struct {
	Cert        string    `json:"cert"`
	Endpoints   []string  `json:"endpoints"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"not_after"`
	RenewAt     time.Time `json:"renew_at"`
	Signer      string    `json:"signer"`        // who signs its renewal: `local [ca] DIR`, a tunnel, or what is missing
	Via         string    `json:"via,omitempty"` // how the last renewal was signed
	Renewals    int       `json:"renewals"`      // since the agent started
	LastError   string    `json:"last_error,omitempty"`
	Failures    int       `json:"failures,omitempty"` // attempts failed since the last renewal; 0 with a LastError: waiting for a tunnel or a signer
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// renewalStatus reports every renewal target, for postern status.
func (a *Agent) renewalStatus() []RenewalStatus {
	r := &a.renew
	r.init(a)
	out := []RenewalStatus{}
	r.mu.Lock()
	for _, tg := range r.targets {
		out = append(out, RenewalStatus{Cert: tg.cert, Endpoints: tg.endpoints, Serial: tg.serial, NotAfter: tg.notAfter,
			RenewAt: tg.renewAt, Via: tg.via, Renewals: tg.renewals, LastError: tg.lastErr, Failures: tg.failures, NextAttempt: tg.retryAt})
	}
	r.mu.Unlock()
	for i := range out {
		out[i].Signer = a.signerOf(out[i].Cert)
	}
	slices.SortFunc(out, func(x, y RenewalStatus) int { return strings.Compare(x.Cert, y.Cert) })
	return out
}

// signerOf says who will sign the next renewal of the certificate in
// file cert: the local [ca], the tunnels whose peer signs for its issuer
// (as far as they have said), or what is missing.
func (a *Agent) signerOf(cert string) string {
	leaf := a.currentLeaf(cert)
	if leaf == nil {
		return "-"
	}
	if cc := a.snapshot().CA; cc != nil {
		if ca, err := capki.Open(cc.Dir); err == nil && leaf.CheckSignatureFrom(ca.Cert) == nil {
			return "local [ca] " + cc.Dir
		}
	}
	var via []string
	a.renew.peerCA.Range(func(k, v any) bool {
		if c, _ := v.(*x509.Certificate); c != nil && leaf.CheckSignatureFrom(c) == nil && !k.(*tunnel.Tunnel).Closed() {
			via = append(via, tunnelName(k.(*tunnel.Tunnel)))
		}
		return true
	})
	if len(via) > 0 {
		slices.Sort(via)
		return strings.Join(via, ", ")
	}
	return "a tunnel to a peer whose [ca] issued " + trust.Subject(leaf) + " (asked when due)"
}
