package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
)

// Certificate upkeep: the files of every [[server]] and [[client]] are
// polled by content hash every reload_interval (and read at once by Reload,
// which SIGHUP calls); new material is swapped in for new handshakes
// without touching live tunnels; a live tunnel whose peer no longer verifies
// against the current CA bundle, CRLs and OCSP answers is closed; and
// certificates that expire within expiry_warning are named in the log at
// start and once a day.

// Timing of the upkeep.
const (
	fullRecheckEvery = time.Minute    // recheck every live tunnel at least this often
	expiryRepeat     = 24 * time.Hour // repeat an expiry warning this often
	crlSoon          = 24 * time.Hour // warn this long before a CRL goes stale
)

// certWatch is the agent's certificate upkeep state. The zero value is
// ready; mu serializes polls and Reload calls.
type certWatch struct {
	mu        sync.Mutex
	endpoints []*certEndpoint
	warned    map[string]time.Time // expiry warnings given, by certificate
	lastFull  time.Time            // last recheck of every live tunnel
	tick      time.Duration        // the poll period: the shortest reload_interval
}

// certEndpoint is the credentials of one [[server]] or [[client]].
type certEndpoint struct {
	name       string // for log lines: `server 127.0.0.1:7443`, `client "hub"`
	creds      *trust.Credentials
	interval   time.Duration // reload_interval
	warnWithin time.Duration // expiry_warning
	next       time.Time     // next poll

	seenErr   string // reload error of the last poll
	loggedErr string // reload error last written to the log
}

// clientTLSConfig builds the TLS configuration of a [[client]]'s dials:
// the server's chain, name and revocation are checked, and when peer is set
// the server must also match one of its identities (a pin).
func clientTLSConfig(creds *trust.Credentials, peer []string) (func(serverName string) *tls.Config, error) {
	pins := make(identity.List, 0, len(peer))
	for _, p := range peer {
		pat, err := identity.Parse(p)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", p, err)
		}
		pins = append(pins, pat)
	}
	return func(serverName string) *tls.Config {
		return trust.ClientConfig(creds, serverName, pins...)
	}, nil
}

// Reload reads every certificate, key, CA bundle and CRL file again (what
// SIGHUP does), swaps in what changed for new handshakes, and closes the
// live tunnels whose peer no longer verifies. Files that fail to load keep
// their endpoint on its previous material; the error names each one.
func (a *Agent) Reload() error {
	w := &a.certs
	w.mu.Lock()
	defer w.mu.Unlock()
	w.setup(a)
	now := time.Now()
	a.log.Info("reload: reading certificate files again")
	var errs []error
	changed := false
	for _, e := range w.endpoints {
		c, err := w.reload(a, e, true)
		changed = changed || c
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !changed && len(errs) == 0 {
		a.log.Info("reload: certificate files unchanged")
	}
	a.recheckTunnels(w.endpoints, now)
	w.lastFull = now
	w.checkExpiry(a, now)
	return errors.Join(errs...)
}

// startCertificateWatch warns about expiring certificates, then polls the
// certificate files and rechecks live tunnels until ctx is done. The
// returned function waits for the poller to stop.
func (a *Agent) startCertificateWatch(ctx context.Context) (wait func()) {
	w := &a.certs
	w.mu.Lock()
	w.setup(a)
	now := time.Now()
	interval := time.Duration(0)
	for _, e := range w.endpoints {
		e.next = now.Add(e.interval)
		if interval == 0 || e.interval < interval {
			interval = e.interval
		}
	}
	w.lastFull, w.tick = now, interval
	w.checkExpiry(a, now)
	w.mu.Unlock()
	done := make(chan struct{})
	if interval <= 0 {
		close(done)
		return func() {}
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				w.poll(a, now)
			}
		}
	}()
	return func() { <-done }
}

// setup lists the endpoints once; mu must be held.
func (w *certWatch) setup(a *Agent) {
	if w.endpoints != nil {
		return
	}
	w.endpoints = []*certEndpoint{}
	for i, sc := range a.cfg.Servers {
		if i >= len(a.servers) {
			break
		}
		w.add(a, fmt.Sprintf("server %s", a.servers[i].ln.Addr()), a.servers[i].srv.Creds, sc.TLS)
	}
	for _, cc := range a.cfg.Clients {
		if c := a.clients[cc.Name]; c != nil {
			w.add(a, fmt.Sprintf("client %q", cc.Name), c.Creds, cc.TLS)
		}
	}
}

func (w *certWatch) add(a *Agent, name string, creds *trust.Credentials, t config.TLS) {
	creds.SetLogger(a.log)
	w.endpoints = append(w.endpoints, &certEndpoint{
		name: name, creds: creds, interval: t.ReloadInterval.D(), warnWithin: t.ExpiryWarning.D(),
	})
}

// poll reloads the endpoints that are due and rechecks live tunnels.
func (w *certWatch) poll(a *Agent, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var recheck []*certEndpoint
	full := now.Sub(w.lastFull) >= fullRecheckEvery
	for _, e := range w.endpoints {
		if now.Add(w.tick / 2).Before(e.next) {
			continue // not due; half a tick of slack so timer jitter does not skip a period
		}
		e.next = now.Add(e.interval)
		changed, _ := w.reload(a, e, false)
		// Changed material can drop trust in a peer; OCSP answers and CRLs
		// age. Otherwise a full pass now and then catches expired peers.
		m := e.creds.Load()
		if full || changed || m.Files.OCSP == trust.OCSPSoft || m.Files.OCSP == trust.OCSPHard {
			recheck = append(recheck, e)
		}
	}
	if full {
		recheck, w.lastFull = w.endpoints, now
	}
	if len(recheck) > 0 {
		a.recheckTunnels(recheck, now)
	}
	w.checkExpiry(a, now)
}

// reload loads e's files again if they changed. A failed poll is logged
// only when the next poll finds the files in the same state, so a
// certificate and key replaced one after the other do not raise an alarm;
// an explicit reload logs every failure at once.
func (w *certWatch) reload(a *Agent, e *certEndpoint, explicit bool) (bool, error) {
	old := e.creds.Load()
	changed, err := e.creds.Reload()
	if err != nil {
		msg := err.Error()
		if explicit || (msg == e.seenErr && msg != e.loggedErr) {
			a.log.Error(fmt.Sprintf("%s: certificate reload failed; still using the material loaded before: %s", e.name, msg))
			e.loggedErr = msg
		}
		e.seenErr = msg
		return false, fmt.Errorf("%s: %w", e.name, err)
	}
	if e.loggedErr != "" && !changed {
		a.log.Info(fmt.Sprintf("%s: certificate files match the material in use again", e.name))
	}
	e.seenErr, e.loggedErr = "", ""
	if changed {
		a.log.Info(fmt.Sprintf("%s: reloaded certificate material: %s", e.name, describeChange(old, e.creds.Load())))
	}
	return changed, nil
}

// describeChange says what a reload swapped in.
func describeChange(old, m *trust.Material) string {
	var parts []string
	cert := fmt.Sprintf("cert %s serial %s (not after %s)", trust.Subject(m.Leaf), m.Leaf.SerialNumber.Text(16), m.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if old != nil && old.Leaf.SerialNumber.Cmp(m.Leaf.SerialNumber) != 0 {
		cert += fmt.Sprintf(", was serial %s", old.Leaf.SerialNumber.Text(16))
	}
	parts = append(parts, cert)
	parts = append(parts, "ca "+strings.Join(m.CASubjects, ", "))
	for _, c := range m.CRLs {
		parts = append(parts, fmt.Sprintf("crl %s (%d revoked, next update %s)", c.Path, len(c.List.RevokedCertificateEntries), stamp(c.List.NextUpdate)))
	}
	return strings.Join(parts, "; ")
}

// recheckTunnels closes the live tunnels (and mux = false connections) of
// the given endpoints whose peer no longer verifies.
func (a *Agent) recheckTunnels(endpoints []*certEndpoint, now time.Time) {
	want := map[*trust.Credentials]bool{}
	for _, e := range endpoints {
		want[e.creds] = true
	}
	for _, cc := range a.cfg.Clients {
		c := a.clients[cc.Name]
		if c == nil || !want[c.Creds] {
			continue
		}
		for _, t := range c.Tunnels() {
			if err := c.Creds.Recheck(peerChain(t), trust.SideClient, now); err != nil {
				a.closeUntrusted(t, fmt.Sprintf("tunnel %s (%s)", cc.Name, t.RemoteAddr()), err, trust.SideClient, c.Creds, now)
			}
		}
	}
	a.mu.Lock()
	accepted := make([]*tunnel.Tunnel, 0, len(a.tunnels))
	for t := range a.tunnels {
		accepted = append(accepted, t)
	}
	a.mu.Unlock()
	for _, t := range accepted {
		creds := a.serverCredsOf(t)
		if len(creds) == 0 || !anyWanted(creds, want) {
			continue
		}
		var err error
		for _, c := range creds {
			if err = c.Recheck(peerChain(t), trust.SideServer, now); err == nil {
				break
			}
		}
		if err != nil {
			a.closeUntrusted(t, fmt.Sprintf("tunnel from %s", t.RemoteAddr()), err, trust.SideServer, creds[0], now)
		}
	}
	a.recheckRaw(want, now)
}

func anyWanted(creds []*trust.Credentials, want map[*trust.Credentials]bool) bool {
	for _, c := range creds {
		if want[c] {
			return true
		}
	}
	return false
}

// serverCredsOf returns the credentials of the [[server]] that accepted t:
// the one whose listener has t's local address. When none matches, it
// returns those of every server (t is then closed only if none trusts it).
func (a *Agent) serverCredsOf(t *tunnel.Tunnel) []*trust.Credentials {
	if len(a.servers) == 1 {
		return []*trust.Credentials{a.servers[0].srv.Creds}
	}
	local := t.LocalAddr()
	all := make([]*trust.Credentials, 0, len(a.servers))
	for _, s := range a.servers {
		if sameListener(s.ln.Addr(), local) {
			return []*trust.Credentials{s.srv.Creds}
		}
		all = append(all, s.srv.Creds)
	}
	return all
}

// sameListener reports whether a connection with local address local was
// accepted on a listener bound to ln.
func sameListener(ln, local net.Addr) bool {
	l, ok1 := ln.(*net.TCPAddr)
	c, ok2 := local.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return ln.String() == local.String()
	}
	return l.Port == c.Port && (l.IP == nil || l.IP.IsUnspecified() || l.IP.Equal(c.IP))
}

func peerChain(t *tunnel.Tunnel) []*x509.Certificate {
	return t.ConnectionState().PeerCertificates
}

// closeUntrusted closes a live tunnel whose peer no longer verifies and
// says why.
func (a *Agent) closeUntrusted(t *tunnel.Tunnel, where string, err error, side trust.Side, creds *trust.Credentials, now time.Time) {
	why := "the peer no longer passes verification: " + trust.Explain(err, side, creds.Load().CASubjects, now)
	a.log.Warn(fmt.Sprintf("%s: closing: %s", where, why), "peer", identity.Describe(t.Peer))
	t.CloseFor(why)
}

// checkExpiry warns about every certificate that expires within its
// endpoint's expiry_warning, and about CRLs that are or soon will be stale:
// the first time it sees each one, then once a day. mu must be held.
func (w *certWatch) checkExpiry(a *Agent, now time.Time) {
	if w.warned == nil {
		w.warned = map[string]time.Time{}
	}
	for k, at := range w.warned {
		if now.Sub(at) > 2*expiryRepeat {
			delete(w.warned, k)
		}
	}
	for _, e := range w.endpoints {
		m := e.creds.Load()
		for i, c := range m.Chain {
			role := fmt.Sprintf("this agent's certificate %s (%s, %s)", trust.Subject(c), e.name, m.Files.Cert)
			if i > 0 {
				role = fmt.Sprintf("intermediate CA %s in %s (%s)", trust.Subject(c), m.Files.Cert, e.name)
			}
			w.warnExpiry(a, c, role, e.warnWithin, now)
		}
		for _, c := range m.CAs {
			w.warnExpiry(a, c, fmt.Sprintf("trusted CA %s in %s (%s)", trust.Subject(c), m.Files.CA, e.name), e.warnWithin, now)
		}
		for _, crl := range m.CRLs {
			w.warnCRL(a, e, crl, m.Files.CRLStale, now)
		}
	}
	for _, cc := range a.cfg.Clients {
		if c := a.clients[cc.Name]; c != nil {
			for _, t := range c.Tunnels() {
				w.warnExpiry(a, t.Peer, fmt.Sprintf("server certificate %s of tunnel %s (%s)", trust.Subject(t.Peer), cc.Name, t.RemoteAddr()), cc.ExpiryWarning.D(), now)
			}
		}
	}
	if len(a.cfg.Servers) == 0 {
		return
	}
	within := a.cfg.Servers[0].ExpiryWarning.D()
	a.mu.Lock()
	accepted := make([]*tunnel.Tunnel, 0, len(a.tunnels))
	for t := range a.tunnels {
		accepted = append(accepted, t)
	}
	a.mu.Unlock()
	for _, t := range accepted {
		w.warnExpiry(a, t.Peer, fmt.Sprintf("client certificate %s of the tunnel from %s", trust.Subject(t.Peer), t.RemoteAddr()), within, now)
	}
}

func (w *certWatch) warnExpiry(a *Agent, c *x509.Certificate, role string, within time.Duration, now time.Time) {
	if c == nil || c.NotAfter.Sub(now) > within {
		return
	}
	key := identity.Fingerprint(c)
	if at, ok := w.warned[key]; ok && now.Sub(at) < expiryRepeat {
		return
	}
	w.warned[key] = now
	left := c.NotAfter.Sub(now)
	facts := fmt.Sprintf("serial %s, sha256:%s", c.SerialNumber.Text(16), identity.Fingerprint(c))
	if left <= 0 {
		a.log.Error(fmt.Sprintf("certificate expired: %s expired %s ago (not after %s; local clock %s) — renew it; %s",
			role, trust.RoundDuration(-left), stamp(c.NotAfter), stamp(now), facts))
		return
	}
	a.log.Warn(fmt.Sprintf("certificate expires soon: %s expires in %s (not after %s) — renew it before then; %s",
		role, trust.RoundDuration(left), stamp(c.NotAfter), facts))
}

func (w *certWatch) warnCRL(a *Agent, e *certEndpoint, crl *trust.CRL, policy string, now time.Time) {
	next := crl.List.NextUpdate
	if next.IsZero() || next.Sub(now) > crlSoon {
		return
	}
	if next.After(now) {
		key := fmt.Sprintf("crl soon %s %s", crl.Path, next)
		if _, ok := w.warned[key]; !ok {
			w.warned[key] = now
			a.log.Warn(fmt.Sprintf("%s: CRL %s goes stale in %s (next update %s) — publish a fresh one (postern pki crl) before then",
				e.name, crl.Path, trust.RoundDuration(next.Sub(now)), stamp(next)))
		}
		return
	}
	key := fmt.Sprintf("crl stale %s %s", crl.Path, next)
	if at, ok := w.warned[key]; ok && now.Sub(at) < expiryRepeat {
		return
	}
	w.warned[key] = now
	effect := "every peer certificate it covers is refused until a fresh CRL is in place (crl_stale = \"refuse\")"
	if policy == trust.CRLStaleWarn {
		effect = "it is still used because crl_stale = \"warn\""
	}
	a.log.Error(fmt.Sprintf("%s: CRL %s of %s is stale: its next update was %s (%s ago); %s — publish a fresh one (postern pki crl)",
		e.name, crl.Path, trust.Subject(crl.Issuer), stamp(next), trust.RoundDuration(now.Sub(next)), effect))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
