package agent

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestRotateServerCertificate: the hub's certificate and key are replaced
// on disk while a stream is transferring. The poll picks them up; the
// stream completes on the old tunnel, and the next handshake presents the
// new certificate. A broken replacement is refused and the hub keeps
// serving the last good one.
func TestRotateServerCertificate(t *testing.T) {
	release := make(chan struct{})
	slow := twoPartService(t, release)
	dir := t.TempDir()
	p := newPKI(t, dir)
	hubCfg := withServerKeys(hubTOML(p, serviceTOML("slow", slow, "*")), `reload_interval = "50ms"`)
	hub := start(t, dir, "hub", hubCfg)
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, addr, "slow"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	oldSerial := serverSerial(t, p, addr)

	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, len("part one;"))); err != nil {
		t.Fatal(err)
	}

	next := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	testca.WriteFile(t, p.hub.Cert, next.CertPEM)
	testca.WriteFile(t, p.hub.Key, next.KeyPEM)
	hub.log.WaitFor(t, 5*time.Second, "reloaded certificate material", "serial "+next.Cert.SerialNumber.Text(16), "was serial "+oldSerial.Text(16))

	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(c); err != nil || string(rest) != "part two" {
		t.Fatalf("stream across the rotation: got %q, %v; want the rest and a clean end", rest, err)
	}
	if got := serverSerial(t, p, addr); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("new handshake presents serial %x, want the new %x", got, next.Cert.SerialNumber)
	}
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("the site connected %d times, want once: rotation must not drop the tunnel", n)
	}

	// A key that does not belong to the certificate: refused, and the hub
	// keeps the last good pair.
	stray := p.ca.Issue(t, testca.Options{CN: "stray"})
	testca.WriteFile(t, p.hub.Key, stray.KeyPEM)
	err := hub.Reload()
	if err == nil || !strings.Contains(err.Error(), "does not match certificate") {
		t.Fatalf("reload with a foreign key: %v", err)
	}
	hub.log.WaitFor(t, 5*time.Second, "certificate reload failed; still using the material loaded before", "does not match certificate", p.hub.Key)
	if got := serverSerial(t, p, addr); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after a failed reload the hub presents %x, want %x", got, next.Cert.SerialNumber)
	}
	// The poll sees the same broken state too, and says so once: the
	// explicit reload already logged it.
	testca.WriteFile(t, p.hub.Key, []byte("not a key"))
	hub.log.WaitFor(t, 5*time.Second, "certificate reload failed", "no PEM private key found")
	testca.WriteFile(t, p.hub.Key, next.KeyPEM)
	hub.log.WaitFor(t, 5*time.Second, "certificate files match the material in use again")
}

// TestExpiryWarnings: at start the hub names its own certificate that
// expires within expiry_warning and an expired CA in its bundle; once a
// site connects, the site's certificate too.
func TestExpiryWarnings(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	p.hub = p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, NotAfter: time.Now().Add(90 * time.Minute)}).Write(t, dir, "hub", p.ca)
	p.site = p.ca.Issue(t, testca.Options{CN: "site-a", NotAfter: time.Now().Add(150 * time.Minute)}).Write(t, dir, "site", p.ca)
	bundle := fmt.Sprintf("%s%s", p.ca.PEM, caPEM(t, "Retired CA", time.Now().Add(-time.Hour)))
	testca.WriteFile(t, p.hub.CA, []byte(bundle))

	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, ""), "expiry_warning = \"3h\"\nreload_interval = \"50ms\""))
	hub.log.WaitFor(t, 5*time.Second, "certificate expires soon; renew it before then", `role="this agent's certificate"`, `cert="CN=\"hub\""`, "expires_in=1h29m", "file="+p.hub.Cert)
	hub.log.WaitFor(t, 5*time.Second, "certificate expired; renew it", `role="trusted CA"`, `cert="CN=\"Retired CA\""`, "expired_ago=1h", "file="+p.hub.CA)
	if countLines(hub.log.String(), `role="trusted CA"`, `cert="CN=\"Test Partners CA\""`) > 0 {
		t.Error("warned about a CA that expires after expiry_warning")
	}
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	hub.log.WaitFor(t, 5*time.Second, "certificate expires soon; renew it before then", `role="client certificate"`, `cert="CN=\"site-a\""`, "peer_addr=", "expires_in=2h29m")
	// The site warns about its own certificate at start.
	site.log.WaitFor(t, 5*time.Second, "certificate expires soon; renew it before then", `role="this agent's certificate"`, `cert="CN=\"site-a\""`)
	if n := countLines(hub.log.String(), "certificate expires soon", `role="this agent's certificate"`, `cert="CN=\"hub\""`); n != 1 {
		t.Errorf("own certificate warned %d times, want once a day", n)
	}
}

// TestReloadRetriesAtOnce: a site the hub refuses (its certificate comes
// from a CA the hub does not trust) backs off for a long time; once new
// certificate material is reloaded it connects at once instead of waiting
// out the backoff.
func TestReloadRetriesAtOnce(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	addr := hub.ServerAddrs()[0].String()

	good, err := os.ReadFile(p.site.Cert)
	if err != nil {
		t.Fatal(err)
	}
	goodKey, err := os.ReadFile(p.site.Key)
	if err != nil {
		t.Fatal(err)
	}
	other := testca.New(t, "Unknown CA").Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	testca.WriteFile(t, p.site.Cert, other.CertPEM)
	testca.WriteFile(t, p.site.Key, other.KeyPEM)
	// Backoff 20-40s: without the retry the next attempt is at least 10s away.
	site := start(t, dir, "site", strings.Replace(siteTOML(p, addr), `backoff_min = "50ms"
backoff_max = "500ms"`, `backoff_min = "20s"
backoff_max = "40s"`, 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", "the server rejected our certificate")

	testca.WriteFile(t, p.site.Cert, good)
	testca.WriteFile(t, p.site.Key, goodKey)
	if err := site.Reload(); err != nil {
		t.Fatal(err)
	}
	site.log.WaitFor(t, 5*time.Second, "new certificate material; retrying now", "tunnel=hub")
	site.log.WaitFor(t, 5*time.Second, "tunnel connected", "tunnel=hub")
}

// TestExpiryCheckPassesHandledCertificates: once a partner's certificate
// in its warning window has been dealt with, the polls that follow pass it
// without work that grows with the partners: no fingerprint, no log
// attributes (a hub with thousands of partners in the window spent a
// sixth of its idle CPU there, hashing every one on every poll).
func TestExpiryCheckPassesHandledCertificates(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	p.hub = p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, NotAfter: time.Now().Add(90 * time.Minute)}).Write(t, dir, "hub", p.ca)
	p.site = p.ca.Issue(t, testca.Options{CN: "site-a", NotAfter: time.Now().Add(150 * time.Minute)}).Write(t, dir, "site", p.ca)
	// No poll during the test: the checks below are the only ones.
	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, ""), "expiry_warning = \"3h\"\nreload_interval = \"1h\""))
	start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
	// The hub's own line: with TLS 1.3 the site is connected before the
	// hub has taken the tunnel into its list, which the check walks.
	hub.log.WaitFor(t, 10*time.Second, "tunnel accepted", `peer="CN=\"site-a\"`)

	w := &hub.certs
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checkExpiry(hub.Agent, time.Now())
	hub.log.WaitFor(t, 5*time.Second, "certificate expires soon; renew it before then", `role="client certificate"`, `cert="CN=\"site-a\""`)
	allocs := testing.AllocsPerRun(20, func() { w.checkExpiry(hub.Agent, time.Now()) })
	// One: the list of accepted tunnels.
	if allocs > 1 {
		t.Errorf("a check that has nothing new to say allocates %.0f times, want at most 1", allocs)
	}
	if n := countLines(hub.log.String(), "certificate expires soon", `role="client certificate"`); n != 1 {
		t.Errorf("client certificate warned %d times, want once a day", n)
	}
	if len(w.handled) != 2 {
		t.Errorf("%d certificates remembered, want 2 (the hub's own, the site's)", len(w.handled))
	}
}
