package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// partners is a hub that trusts two partners' CAs: partner A's CA issued
// the hub's and site-a's certificates; partner B's CA issued a certificate
// that also says site-a.test (B impersonating A).
type partners struct {
	dir          string
	caA, caB     *testca.CA
	both         string // a bundle of both CAs
	hub          testca.Files
	siteA, forge testca.Files // ca: A's CA, to verify the hub
}

func newPartners(t testing.TB) *partners {
	dir := t.TempDir()
	p := &partners{dir: dir, caA: testca.New(t, "Partner A CA"), caB: testca.New(t, "Partner B CA")}
	p.both = filepath.Join(dir, "partners-ca.crt")
	testca.WriteFile(t, p.both, append(append([]byte{}, p.caA.PEM...), p.caB.PEM...))
	hub := p.caA.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	p.hub = hub.Write(t, dir, "hub", p.caA)
	p.hub.CA = p.both
	p.siteA = p.caA.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "site-a", p.caA)
	p.forge = p.caB.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "forged", p.caA)
	return p
}

// fromA is pattern scoped to partner A's CA.
func (p *partners) fromA(pattern string) string {
	return pattern + " from ca:sha256:" + identity.Fingerprint(p.caA.Cert)
}

// hubTOML is the hub, trusting both CAs, with extra tables.
func (p *partners) hubTOML(extra string) string {
	return hubTOML(&pki{ca: p.caA, hub: p.hub}, extra)
}

// siteTOML is a site with the given certificate dialing the hub.
func (p *partners) siteTOML(site testca.Files, addr string, forwards ...string) string {
	return siteTOML(&pki{ca: p.caA, site: site}, addr, forwards...)
}

// TestPartnerCAImpersonation: the hub trusts A's and B's CAs and allows
// site-a, from A's CA, to reach erp. A certificate from B's CA that names
// site-a gets a tunnel (B's CA is trusted) but no stream to erp.
func TestPartnerCAImpersonation(t *testing.T) {
	p := newPartners(t)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, p.dir, "hub", p.hubTOML(serviceTOML("erp", ln.Addr().String(), p.fromA("dns:site-a.test"))))
	addr := hub.ServerAddrs()[0].String()

	forged := start(t, p.dir, "forged", p.siteTOML(p.forge, addr, "erp"))
	forged.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got, err := echoOnce(t, forged.ForwardAddrs()[0], "impersonating site-a"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("B's certificate for site-a reached erp: %q, %v; want connection reset", got, err)
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", "service=erp", `reason="identity not in allow`,
		`issuer="CN=\"Partner B CA\" sha256:`+identity.Fingerprint(p.caB.Cert)+`"`)

	real := start(t, p.dir, "site-a", p.siteTOML(p.siteA, addr, "erp"))
	real.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got, err := echoOnce(t, real.ForwardAddrs()[0], "site-a here"); err != nil || got != "site-a here" {
		t.Fatalf("A's certificate for site-a: %q, %v; want the echo", got, err)
	}
}

// TestPartnerCAReverseVia: a reverse forward scoped to A's CA never sends
// a connection to B's tunnel that claims site-a's name.
func TestPartnerCAReverseVia(t *testing.T) {
	p := newPartners(t)
	forgedTarget, realTarget := namedService(t, "forged"), namedService(t, "real")
	hub := start(t, p.dir, "hub", p.hubTOML(fmt.Sprintf(
		"[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = \"echo\"\nvia = %q\ntunnel_wait = \"1s\"\n", p.fromA("dns:site-a.test"))))
	addr := hub.ServerAddrs()[0].String()
	fwd := hub.ForwardAddrs()[0]

	forged := start(t, p.dir, "forged", p.siteTOML(p.forge, addr)+serviceTOML("echo", forgedTarget.Addr().String(), "dns:hub.test"))
	forged.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	hub.log.WaitFor(t, 5*time.Second, "tunnel accepted", "site-a.test")
	if got := whoAnswers(t, fwd); !strings.Contains(got, "reset") {
		t.Fatalf("reverse forward with only B's site-a connected: %q, want a reset", got)
	}
	hub.log.WaitFor(t, 5*time.Second, "no connected peer matches "+p.fromA("dns:site-a.test"))

	real := start(t, p.dir, "site-a", p.siteTOML(p.siteA, addr)+serviceTOML("echo", realTarget.Addr().String(), "dns:hub.test"))
	real.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	// The site calls its tunnel connected once the hub answered a ping,
	// which may be before the hub holds it: until then the reverse forward
	// (its peer long gone) resets at once. Wait for the hub's side.
	deadline := time.Now().Add(10 * time.Second)
	for len(hub.Status().Tunnels) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the hub holds %d tunnels, want 2 (B's site-a and A's)", len(hub.Status().Tunnels))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	for i := range 5 {
		if got := whoAnswers(t, fwd); got != "real" {
			t.Fatalf("connection %d through the reverse forward reached %q, want real", i, got)
		}
	}
}

// TestPartnerCAClientPeer: a site that trusts both CAs pins the hub to A's
// CA; a server with B's certificate for hub.test is refused in the
// handshake, A's hub is accepted.
func TestPartnerCAClientPeer(t *testing.T) {
	p := newPartners(t)
	site := p.siteA
	site.CA = p.both
	forgedHub := p.caB.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}}).Write(t, p.dir, "forged-hub", p.caA)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	svc := serviceTOML("erp", ln.Addr().String(), p.fromA("dns:site-a.test"))
	fake := start(t, p.dir, "fake-hub", hubTOML(&pki{hub: testca.Files{Cert: forgedHub.Cert, Key: forgedHub.Key, CA: p.both}}, svc))
	real := start(t, p.dir, "hub", p.hubTOML(svc))

	pin := fmt.Sprintf("peer = [%q]", p.fromA("dns:hub.test"))
	toFake := start(t, p.dir, "to-fake", withClientKeys(p.siteTOML(site, fake.ServerAddrs()[0].String(), "erp"), pin))
	toFake.log.WaitFor(t, 10*time.Second, "matches none of peer = [dns:hub.test from ca:sha256:"+identity.Fingerprint(p.caA.Cert)+"]")
	if got, err := echoOnce(t, toFake.ForwardAddrs()[0], "to B's hub"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("through B's hub: %q, %v; want connection reset", got, err)
	}

	toReal := start(t, p.dir, "to-real", withClientKeys(p.siteTOML(site, real.ServerAddrs()[0].String(), "erp"), pin))
	toReal.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got, err := echoOnce(t, toReal.ForwardAddrs()[0], "to A's hub"); err != nil || got != "to A's hub" {
		t.Fatalf("through A's hub: %q, %v", got, err)
	}
}

// TestPartnerCAUnscopedRefused: with two CAs trusted, a name pattern that
// does not say which CA is refused at load, naming the entry and giving
// the fix with both CAs' fingerprints; pins and scoped patterns load.
func TestPartnerCAUnscopedRefused(t *testing.T) {
	p := newPartners(t)
	fpA, fpB := identity.Fingerprint(p.caA.Cert), identity.Fingerprint(p.caB.Cert)
	fix := func(pattern string) string {
		return fmt.Sprintf(`%q names no CA, but this agent trusts 2 CAs (ca %s), and any of them can issue a certificate with that name; write it as one of: "%s from ca:sha256:%s" (CN="Partner A CA"); "%s from ca:sha256:%s" (CN="Partner B CA")`,
			pattern, p.both, pattern, fpA, pattern, fpB)
	}
	site := p.siteA
	site.CA = p.both
	tests := []struct {
		name, toml string
		line       int
		want       string
	}{
		{"service allow", p.hubTOML(serviceTOML("erp", "127.0.0.1:1", "sha256:"+fpA, "dns:site-a.test")), 12,
			`service "erp": allow ` + fix("dns:site-a.test")},
		{"allow *", p.hubTOML(serviceTOML("erp", "127.0.0.1:1", "*")), 12, `service "erp": allow ` + fix("*")},
		{"reverse via", p.hubTOML("[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = \"echo\"\nvia = \"cn:site-a\"\n"), 12,
			"forward 127.0.0.1:0: via " + fix("cn:site-a")},
		{"client peer", withClientKeys(p.siteTOML(site, "127.0.0.1:1"), `peer = ["uri:spiffe://test/hub"]`), 10,
			`client "hub": peer ` + fix("uri:spiffe://test/hub")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(p.dir, "refused.toml")
			testca.WriteFile(t, path, []byte(tt.toml))
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("config %s:%d: %s", path, tt.line, tt.want)
			a, err := New(cfg, testLogger(t), Options{})
			if err == nil {
				a.closeListeners()
				t.Fatal("New accepted an unscoped pattern with two CAs")
			}
			if err.Error() != want {
				t.Fatalf("New error:\n got %v\nwant %s", err, want)
			}
		})
	}
	t.Run("scoped and pinned load", func(t *testing.T) {
		svc := serviceTOML("erp", "127.0.0.1:1", "sha256:"+fpA, "spki:"+identity.SPKIHash(p.caB.Cert), p.fromA("dns:site-a.test"), p.fromA("*"))
		start(t, p.dir, "ok", p.hubTOML(svc))
	})
}

// testLogger logs to the test with -v only.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t, "agent"}, nil))
}

// TestPartnerCAReloadRefused: a hub that trusts one CA and allows by name
// refuses a reload whose bundle adds a second CA; it keeps trusting only
// the first, so B's certificate for site-a still gets no tunnel.
func TestPartnerCAReloadRefused(t *testing.T) {
	p := newPartners(t)
	p.hub.CA = filepath.Join(p.dir, "hub-ca.crt")
	testca.WriteFile(t, p.hub.CA, p.caA.PEM)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, p.dir, "hub", p.hubTOML(serviceTOML("erp", ln.Addr().String(), "dns:site-a.test")))

	testca.WriteFile(t, p.hub.CA, append(append([]byte{}, p.caA.PEM...), p.caB.PEM...))
	err := hub.Reload()
	if err == nil || !strings.Contains(err.Error(), `service "erp": allow "dns:site-a.test" names no CA, but this agent trusts 2 CAs`) {
		t.Fatalf("Reload with a second CA: %v; want the unscoped allow named", err)
	}
	hub.log.WaitFor(t, 5*time.Second, "certificate reload failed; still using the material loaded before", "names no CA")

	forged := start(t, p.dir, "forged", p.siteTOML(p.forge, hub.ServerAddrs()[0].String(), "erp"))
	hub.log.WaitFor(t, 10*time.Second, "tunnel refused", "unknown authority")
	if got, err := echoOnce(t, forged.ForwardAddrs()[0], "impersonating site-a"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("B's certificate after the refused reload: %q, %v; want connection reset", got, err)
	}
}
