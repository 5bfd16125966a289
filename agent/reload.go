package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
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

	// handled remembers, by certificate object, when checkExpiry last dealt
	// with a certificate inside its warning window, so the next polls pass
	// it without hashing it for warned or building its log attributes: at
	// a hub whose partners hold 90-day certificates, a third of them are in
	// the default 30-day window at any time. Entries not met in a pass
	// (pass) are dropped at its end.
	handled map[*x509.Certificate]handledCert
	pass    uint64
}

// handledCert is when checkExpiry last dealt with a certificate in its
// warning window, and the last pass that met it.
type handledCert struct {
	at   time.Time
	pass uint64
}

// certEndpoint is the credentials of one [[server]] or [[client]].
type certEndpoint struct {
	name       string // for errors: `server 127.0.0.1:7443`, `client "hub"`
	attrs      []any  // for log lines: listen = 127.0.0.1:7443, or tunnel = hub
	side       trust.Side
	creds      *trust.Credentials
	interval   time.Duration // reload_interval
	warnWithin time.Duration // expiry_warning
	changed    func()        // called after new material was loaded, or nil
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

// Reload reads the config file again and applies what changed in its
// services and forwards (reconfig.go; a file that does not load changes
// nothing), then reads every certificate, key, CA bundle and CRL file again (what
// SIGHUP does), swaps in what changed for new handshakes, and closes the
// live tunnels whose peer no longer verifies. Files that fail to load keep
// their endpoint on its previous material; the error names each one.
func (a *Agent) Reload() error {
	_, err := a.ReloadReport()
	return err
}

// ReloadReport is Reload, and also says what it did: which endpoints'
// material changed, which kept theirs, and why.
func (a *Agent) ReloadReport() (string, error) {
	w := &a.certs
	w.mu.Lock()
	defer w.mu.Unlock()
	report, err := a.reloadConfig()
	if errors.Is(err, errNotApplied) {
		return strings.Join(report, "\n"), err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	w.setup(a)
	now := time.Now()
	a.log.Info("reload: reading certificate files again")
	changed := false
	for _, e := range w.endpoints {
		c, err := w.reload(a, e, true)
		changed = changed || c
		switch {
		case err != nil:
			errs = append(errs, err)
			report = append(report, fmt.Sprintf("%s: kept the material loaded before: %v", e.name, err))
		case c:
			report = append(report, fmt.Sprintf("%s: reloaded %s", e.name, describeChange(nil, e.creds.Load())))
		default:
			report = append(report, e.name+": certificate files unchanged")
		}
	}
	if !changed && len(errs) == 0 {
		a.log.Info("reload: certificate files unchanged")
	}
	a.recheckTunnels(w.endpoints, now)
	w.lastFull = now
	w.checkExpiry(a, now)
	if len(report) == 0 {
		report = append(report, "no [[server]] or [[client]]: no certificate files to read")
	}
	return strings.Join(report, "\n"), errors.Join(errs...)
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
		addr := a.servers[i].ln.Addr().String()
		w.add(a, "server "+addr, []any{"listen", addr}, trust.SideServer, a.servers[i].srv.Creds, sc.TLS, nil)
	}
	for _, cc := range a.cfg.Clients {
		if c := a.clients[cc.Name]; c != nil {
			// New material may be what the server refused us for: retry
			// at once rather than wait out the reconnect backoff.
			w.add(a, fmt.Sprintf("client %q", cc.Name), []any{"tunnel", cc.Name}, trust.SideClient, c.Creds, cc.TLS, c.RetryNow)
		}
	}
}

func (w *certWatch) add(a *Agent, name string, attrs []any, side trust.Side, creds *trust.Credentials, t config.TLS, changed func()) {
	creds.SetLogger(a.log)
	w.endpoints = append(w.endpoints, &certEndpoint{
		name: name, attrs: attrs, side: side, creds: creds, interval: t.ReloadInterval.D(), warnWithin: t.ExpiryWarning.D(),
		changed: changed,
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
	changed, err := false, caScopeError(a.snapshot())
	if err == nil {
		changed, err = e.creds.Reload()
	}
	if err != nil {
		msg := err.Error()
		if explicit || (msg == e.seenErr && msg != e.loggedErr) {
			a.log.Error("certificate reload failed; still using the material loaded before", append(slices.Clip(e.attrs), "err", msg)...)
			e.loggedErr = msg
		} else if msg != e.loggedErr {
			// Files replaced one after the other (a certificate renamed
			// into place before its key) look like this for a moment.
			a.log.Debug("certificate files do not load yet; checking again at the next poll", append(slices.Clip(e.attrs), "err", msg)...)
		}
		e.seenErr = msg
		return false, fmt.Errorf("%s: %w", e.name, err)
	}
	if e.loggedErr != "" && !changed {
		a.log.Info("certificate files match the material in use again", e.attrs...)
	}
	e.seenErr, e.loggedErr = "", ""
	if changed {
		m := e.creds.Load()
		a.log.Info("reloaded certificate material", append(slices.Clip(e.attrs), "serial", m.Leaf.SerialNumber.Text(16), "material", describeChange(old, m))...)
		if e.changed != nil {
			e.changed()
		}
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
			if err := a.recheckPeer(c.Creds, t, trust.SideClient, now); err != nil {
				a.closeUntrusted(t, []any{"tunnel", cc.Name, "addr", t.RemoteAddr().String()}, err, trust.SideClient, c.Creds, now)
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
			if err = a.recheckPeer(c, t, trust.SideServer, now); err == nil {
				break
			}
		}
		if err != nil {
			a.closeUntrusted(t, []any{"peer_addr", t.RemoteAddr().String()}, err, trust.SideServer, creds[0], now)
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

// recheckPeer verifies a live tunnel's peer again. A peer this agent's
// [ca] renewed over the tunnel (renew_sign.go) is checked twice: the
// certificate it presented must not be revoked (as of its last valid
// moment, once it has expired), and the renewed one must verify now; so
// a renewed peer's tunnel outlives its first certificate, and revoking
// either still cuts it.
func (a *Agent) recheckPeer(creds *trust.Credentials, t *tunnel.Tunnel, side trust.Side, now time.Time) error {
	presented := t.ConnectionState().PeerCertificates
	succ := a.renew.successor(t)
	if succ == nil || len(presented) == 0 {
		return creds.Recheck(presented, side, now)
	}
	at := now
	if now.After(presented[0].NotAfter) {
		at = presented[0].NotAfter.Add(-time.Second)
	}
	if err := creds.Recheck(presented, side, at); err != nil {
		return err
	}
	return creds.Recheck(succ, side, now)
}

// closeUntrusted closes a live tunnel whose peer no longer verifies and
// says why.
// where names the tunnel as log attributes.
func (a *Agent) closeUntrusted(t *tunnel.Tunnel, where []any, err error, side trust.Side, creds *trust.Credentials, now time.Time) {
	explained := trust.Explain(err, side, creds.Load().CASubjects, now)
	a.log.Warn("closing tunnel: the peer no longer passes verification",
		append(where, "peer", identity.Describe(t.Peer), "reason", explained)...)
	t.CloseFor("the peer no longer passes verification: " + explained)
}

// checkExpiry warns about every certificate that expires within its
// endpoint's expiry_warning, and about CRLs that are or soon will be stale:
// the first time it sees each one, then once a day. mu must be held.
func (w *certWatch) checkExpiry(a *Agent, now time.Time) {
	if w.warned == nil {
		w.warned = map[string]time.Time{}
		w.handled = map[*x509.Certificate]handledCert{}
	}
	for k, at := range w.warned {
		if now.Sub(at) > 2*expiryRepeat {
			delete(w.warned, k)
		}
	}
	w.pass++
	defer func() {
		for c, h := range w.handled {
			if h.pass != w.pass {
				delete(w.handled, c)
			}
		}
	}()
	for _, e := range w.endpoints {
		m := e.creds.Load()
		w.warnOwn(a, e, m, now)
		for i, c := range m.Chain {
			role := "this agent's certificate"
			if i > 0 {
				role = "intermediate CA"
			}
			if w.expiryDue(c, e.warnWithin, now) {
				w.warnExpiry(a, c, role, append(slices.Clip(e.attrs), "file", m.Files.Cert), now)
			}
		}
		for _, c := range m.CAs {
			if w.expiryDue(c, e.warnWithin, now) {
				w.warnExpiry(a, c, "trusted CA", append(slices.Clip(e.attrs), "file", m.Files.CA), now)
			}
		}
		for _, crl := range m.CRLs {
			w.warnCRL(a, e, crl, m.Files.CRLStale, now)
		}
	}
	for _, cc := range a.cfg.Clients {
		if c := a.clients[cc.Name]; c != nil {
			for _, t := range c.Tunnels() {
				if peer := a.peerLeaf(t); w.expiryDue(peer, cc.ExpiryWarning.D(), now) {
					w.warnExpiry(a, peer, "server certificate", []any{"tunnel", cc.Name, "addr", t.RemoteAddr().String()}, now)
				}
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
		if peer := a.peerLeaf(t); w.expiryDue(peer, within, now) {
			w.warnExpiry(a, peer, "client certificate", []any{"peer_addr", t.RemoteAddr().String()}, now)
		}
	}
}

// expiryDue reports whether c, when not nil, expires within within and
// this certificate object was not dealt with in the last expiryRepeat:
// then warnExpiry should see it (it warns once per expiryRepeat for the
// same certificate, by fingerprint, whatever object carries it).
func (w *certWatch) expiryDue(c *x509.Certificate, within time.Duration, now time.Time) bool {
	if c == nil || c.NotAfter.Sub(now) > within {
		return false
	}
	h, ok := w.handled[c]
	due := !ok || now.Sub(h.at) >= expiryRepeat
	if due {
		h.at = now
	}
	h.pass = w.pass
	w.handled[c] = h
	return due
}

// warnExpiry warns about c, which expires within its warning window,
// unless the same certificate was warned about in the last expiryRepeat.
// role says which certificate c is ("trusted CA", "client certificate",
// ...); where names its endpoint, file or tunnel as log attributes.
func (w *certWatch) warnExpiry(a *Agent, c *x509.Certificate, role string, where []any, now time.Time) {
	key := identity.Fingerprint(c)
	if at, ok := w.warned[key]; ok && now.Sub(at) < expiryRepeat {
		return
	}
	w.warned[key] = now
	left := c.NotAfter.Sub(now)
	attrs := append([]any{"role", role, "cert", trust.Subject(c)}, where...)
	attrs = append(attrs, "not_after", stamp(c.NotAfter))
	facts := []any{"serial", c.SerialNumber.Text(16), "sha256", identity.Fingerprint(c)}
	if left <= 0 {
		attrs = append(attrs, "expired_ago", trust.RoundDuration(-left), "clock", stamp(now))
		a.log.Error("certificate expired; renew it", append(attrs, facts...)...)
		return
	}
	attrs = append(attrs, "expires_in", trust.RoundDuration(left))
	a.log.Warn("certificate expires soon; renew it before then", append(attrs, facts...)...)
}

// warnOwn says, at start, after each reload and once a day, what postern
// check would say of this agent's own certificate: not valid yet, or
// without the usage its peers require. (Expiry is warnExpiry's.)
func (w *certWatch) warnOwn(a *Agent, e *certEndpoint, m *trust.Material, now time.Time) {
	if m.Leaf == nil || now.After(m.Leaf.NotAfter) {
		return
	}
	p := m.OwnProblem(e.side, now)
	if p == "" {
		return
	}
	key := "own " + identity.Fingerprint(m.Leaf)
	if at, ok := w.warned[key]; ok && now.Sub(at) < expiryRepeat {
		return
	}
	w.warned[key] = now
	a.log.Error("this agent's certificate will be refused by its peers", append(slices.Clip(e.attrs), "file", m.Files.Cert, "reason", p)...)
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
			a.log.Warn("CRL goes stale soon; publish a fresh one (postern pki crl) before then",
				append(slices.Clip(e.attrs), "file", crl.Path, "next_update", stamp(next), "stale_in", trust.RoundDuration(next.Sub(now)))...)
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
	a.log.Error("CRL is stale; publish a fresh one (postern pki crl)",
		append(slices.Clip(e.attrs), "file", crl.Path, "issuer", trust.Subject(crl.Issuer), "next_update", stamp(next),
			"stale_for", trust.RoundDuration(now.Sub(next)), "reason", effect)...)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
