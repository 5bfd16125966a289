package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// renewPKI makes a `postern pki` folder in dir/pki with a hub certificate
// (a day) and a certificate for each site (siteValidity), on disk.
func renewPKI(t testing.TB, dir string, siteValidity time.Duration, sites ...string) (*capki.CA, *pki, map[string]testca.Files) {
	t.Helper()
	ca, err := capki.Init(filepath.Join(dir, "pki"), capki.InitOptions{CommonName: "Renewal Test CA"})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "pki", capki.CertFile)
	issue := func(name string, names capki.Names, validity time.Duration) testca.Files {
		certPEM, keyPEM, err := ca.Issue(capki.IssueOptions{Names: names, Usage: capki.UsageBoth, Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		f := testca.Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: caFile}
		testca.WriteFile(t, f.Cert, certPEM)
		if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p := &pki{hub: issue("hub", capki.Names{CommonName: "hub", DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, 24*time.Hour)}
	files := map[string]testca.Files{}
	for _, s := range sites {
		files[s] = issue(s, capki.Names{CommonName: s, DNSNames: []string{s + ".test"}}, siteValidity)
	}
	return ca, p, files
}

// withTLSKeys adds lines to a config's [tls] table.
func withTLSKeys(toml, lines string) string {
	return strings.Replace(toml, "[tls]\n", "[tls]\n"+lines+"\n", 1)
}

// caTOML is a [ca] table signing with dir/pki.
func caTOML(validity string) string {
	return fmt.Sprintf("\n[ca]\ndir = \"pki\"\nvalidity = %q\n", validity)
}

// startPrepared is start with a chance to set the agent's test hooks
// before it runs.
func startPrepared(t testing.TB, dir, name, toml string, prep func(*Agent)) *running {
	t.Helper()
	path := filepath.Join(dir, name+".toml")
	testca.WriteFile(t, path, []byte(toml))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testnet.LogBuffer{}
	lg := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t, name}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg, lg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	prep(a)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, log: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) renewals(cert string) RenewalStatus {
	for _, s := range r.renewalStatus() {
		if s.Cert == cert {
			return s
		}
	}
	return RenewalStatus{}
}

// loadStream moves random data through c and back (an echo service)
// until stop is closed, hashing what it sent and what came back.
type loadStream struct {
	c              *net.TCPConn
	sent, received hash.Hash
	n              int64
	done           chan error
}

func startLoad(t *testing.T, addr string, stop <-chan struct{}) *loadStream {
	ls := &loadStream{c: testnet.Dial(t, addr), sent: sha256.New(), received: sha256.New(), done: make(chan error, 2)}
	go func() { // client → tunnel
		buf := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				ls.done <- ls.c.CloseWrite()
				return
			default:
			}
			rand.Read(buf)
			if _, err := ls.c.Write(buf); err != nil {
				ls.done <- fmt.Errorf("write: %w", err)
				return
			}
			ls.sent.Write(buf)
		}
	}()
	go func() { // tunnel → client
		n, err := io.Copy(ls.received, ls.c)
		ls.n = n
		ls.done <- err
	}()
	return ls
}

// TestRenewalUnderLoad: a site whose certificate lives 12 seconds renews
// it over its tunnel every 4 while streams move data through that tunnel
// without pause: after three renewals every byte came back (SHA-256
// equal), nothing was reset, the tunnel is the first one, each new
// certificate is what the next handshake presents, and the hub keeps the
// tunnel after the first certificate expired.
func TestRenewalUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 15s")
	}
	dir := t.TempDir()
	_, p, sites := renewPKI(t, dir, 12*time.Second, "site-a")
	p.site = sites["site-a"]
	echo := testnet.Listen(t)
	testnet.Serve(t, echo, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("echo", echo.Addr().String(), "*"))+caTOML("12s"))
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", withTLSKeys(siteTOML(p, addr, "echo"), `renew_before = "8s"`))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	first := site.currentLeaf(p.site.Cert)

	stop := make(chan struct{})
	var loads []*loadStream
	for range 4 {
		loads = append(loads, startLoad(t, site.ForwardAddrs()[0].String(), stop))
	}
	seen := map[string]bool{first.SerialNumber.Text(16): true}
	for i := 1; i <= 3; i++ {
		waitUntil(t, 20*time.Second, fmt.Sprintf("renewal %d", i), func() bool { return site.renewals(p.site.Cert).Renewals >= i })
		leaf := site.currentLeaf(p.site.Cert)
		serial := leaf.SerialNumber.Text(16)
		if seen[serial] {
			t.Fatalf("renewal %d: serial %s seen before", i, serial)
		}
		seen[serial] = true
		if leaf.Equal(first) || string(leaf.RawSubjectPublicKeyInfo) == string(first.RawSubjectPublicKeyInfo) {
			t.Fatalf("renewal %d kept the first key", i)
		}
		// The next handshake presents the new certificate.
		c, err := tls.Dial("tcp", addr, trust.ClientConfig(site.clients["hub"].Creds, "hub.test"))
		if err != nil {
			t.Fatalf("handshake after renewal %d: %v", i, err)
		}
		waitUntil(t, 5*time.Second, "hub sees the new serial", func() bool {
			for _, tn := range hub.liveTunnels() {
				if tn.Peer.SerialNumber.Text(16) == serial {
					return true
				}
			}
			return false
		})
		c.Close()
	}
	// The first certificate has expired by now; a recheck of the live
	// tunnel uses the renewed one and keeps it.
	waitUntil(t, 10*time.Second, "first certificate expired", func() bool { return time.Now().After(first.NotAfter) })
	if err := hub.Reload(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	for i, ls := range loads {
		for range 2 {
			if err := <-ls.done; err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		}
		if ls.n == 0 || string(ls.sent.Sum(nil)) != string(ls.received.Sum(nil)) {
			t.Errorf("stream %d: %d bytes back, SHA-256 differs from what was sent", i, ls.n)
		}
	}
	for _, r := range []*running{hub, site} {
		if n := countLines(r.log.String(), "stream reset"); n != 0 {
			t.Errorf("%d streams reset", n)
		}
		if strings.Contains(r.log.String(), "closing tunnel") {
			t.Error("a tunnel was closed")
		}
	}
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("site connected %d times, want once", n)
	}
	site.log.WaitFor(t, time.Second, "certificate renewed", "via=\"tunnel hub (127.0.0.1:")
	if n := counterValue(site.renew.own.WithLabelValues("renewed")); n < 3 {
		t.Errorf("postern_cert_renewal_total{result=renewed} = %v, want at least 3", n)
	}
	if n := counterValue(hub.renew.signed.WithLabelValues("signed")); n < 3 {
		t.Errorf("postern_cert_renewal_signed_total{result=signed} = %v, want at least 3", n)
	}
	if st := site.Status().Renewals; len(st) != 1 || !strings.HasPrefix(st[0].Signer, "tunnel hub (127.0.0.1:") || st[0].Renewals < 3 {
		t.Errorf("status renewals: %+v", st)
	}
	hub.log.WaitFor(t, time.Second, "certificate renewed for peer", `cert="CN=\"site-a\""`)
	fi, err := os.Stat(p.site.Key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file after renewal: %v, %v; want mode 0600", fi.Mode(), err)
	}
}

// TestRenewalRefused: the hub refuses to renew a revoked certificate, an
// expired one, and a request that changes the identity, naming the reason
// on both sides.
func TestRenewalRefused(t *testing.T) {
	noop := func(*testing.T, *capki.CA, *x509.Certificate, *Agent) {}
	cases := []struct {
		name    string
		prep    func(t *testing.T, ca *capki.CA, site *x509.Certificate, hub *Agent)
		reason  string
		caExtra string
	}{
		{"key type", noop, "key ECDSA P-256 is not in [ca] key_types (ed25519)", `key_types = ["ed25519"]`},
		{"identities", noop, "identity dns:site-a.test is outside [ca] identities", `identities = ["cn:site-a", "dns:*.example.com"]`},
		{"revoked", func(t *testing.T, ca *capki.CA, site *x509.Certificate, _ *Agent) {
			if err := ca.Revoke(site.SerialNumber, capki.ReasonKeyCompromise); err != nil {
				t.Fatal(err)
			}
		}, "was revoked on", ""},
		{"expired", func(t *testing.T, _ *capki.CA, _ *x509.Certificate, hub *Agent) {
			if hub == nil {
				return // the clock is set on the hub before it runs
			}
			hub.renew.clock = func() time.Time { return time.Now().Add(2 * time.Hour) }
		}, "expired at", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca, p, sites := renewPKI(t, dir, time.Hour, "site-a")
			p.site = sites["site-a"]
			leaf, err := tls.LoadX509KeyPair(p.site.Cert, p.site.Key)
			if err != nil {
				t.Fatal(err)
			}
			tc.prep(t, ca, leaf.Leaf, nil)
			hub := startPrepared(t, dir, "hub", hubTOML(p, "")+caTOML("1h")+tc.caExtra+"\n", func(a *Agent) {
				if tc.name == "expired" {
					tc.prep(t, ca, leaf.Leaf, a)
				}
			})
			// renew_before as long as the validity: due at once.
			site := start(t, dir, "site", withTLSKeys(siteTOML(p, hub.ServerAddrs()[0].String()), `renew_before = "1h"`))
			site.log.WaitFor(t, 15*time.Second, "certificate renewal failed; retrying", "expires_in=", "retry_in=", tc.reason)
			hub.log.WaitFor(t, 5*time.Second, "certificate renewal refused", `cert="CN=\"site-a\""`, tc.reason)
			// Retried with a doubling delay.
			site.log.WaitFor(t, 15*time.Second, "certificate renewal failed; retrying", "retry_in=2s", tc.reason)
			if st := site.renewals(p.site.Cert); !strings.Contains(st.LastError, tc.reason) || st.Renewals != 0 {
				t.Errorf("status: %+v", st)
			}
			// Exported as metrics: two failed attempts by now, each refused
			// by the hub, and the next renewal due at the retry.
			if n := counterValue(site.renew.own.WithLabelValues("failed")); n < 2 {
				t.Errorf("postern_cert_renewal_total{result=failed} = %v, want at least 2", n)
			}
			if n := counterValue(site.renew.own.WithLabelValues("renewed")); n != 0 {
				t.Errorf("postern_cert_renewal_total{result=renewed} = %v, want 0", n)
			}
			if n := counterValue(hub.renew.signed.WithLabelValues("refused")); n < 2 {
				t.Errorf("postern_cert_renewal_signed_total{result=refused} = %v, want at least 2", n)
			}
			if n := counterValue(hub.renew.signed.WithLabelValues("signed")); n != 0 {
				t.Errorf("postern_cert_renewal_signed_total{result=signed} = %v, want 0", n)
			}
			next := gaugeValue(t, site, "postern_cert_renewal_next_seconds")
			if at := site.renewals(p.site.Cert).NextAttempt; at.IsZero() || math.Abs(next-time.Until(at).Seconds()) > 0.5 {
				t.Errorf("postern_cert_renewal_next_seconds = %.1f, want the seconds until the retry at %v", next, at)
			}
		})
	}
	t.Run("identity changed", func(t *testing.T) {
		dir := t.TempDir()
		_, p, sites := renewPKI(t, dir, time.Hour, "site-a")
		p.site = sites["site-a"]
		hub := start(t, dir, "hub", hubTOML(p, "")+caTOML("1h"))
		site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
		site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
		key, _ := capki.GenerateKey("")
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "site-a"}, DNSNames: []string{"site-a.test", "hub.test"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = askPeer(hubTunnel(t, site), wire.OpCertRenew, csr)
		var ce *wire.ControlError
		if !errors.As(err, &ce) || ce.Reply.Code != wire.ControlRefused || !strings.Contains(err.Error(), "the request changes the identity") ||
			!strings.Contains(err.Error(), "dns:hub.test") {
			t.Fatalf("renewal with another identity: %v", err)
		}
		hub.log.WaitFor(t, 5*time.Second, "certificate renewal refused", "the request changes the identity")

		// A good request is signed; a second one at once is not.
		good, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "site-a"}, DNSNames: []string{"site-a.test"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		tn := hubTunnel(t, site)
		if _, err := askPeer(tn, wire.OpCertRenew, good); err != nil {
			t.Fatalf("first renewal: %v", err)
		}
		if _, err := askPeer(tn, wire.OpCertRenew, good); err == nil || !strings.Contains(err.Error(), "renewed less than 2s ago on this tunnel") {
			t.Fatalf("second renewal at once: %v", err)
		}
	})
}

// TestRenewalLocalCA: the hub's own certificate, issued by its [ca],
// renews from the folder without any tunnel; the next handshake presents
// the new serial.
func TestRenewalLocalCA(t *testing.T) {
	dir := t.TempDir()
	ca, p, _ := renewPKI(t, dir, time.Hour)
	certPEM, keyPEM, err := ca.Issue(capki.IssueOptions{Names: capki.Names{CommonName: "hub", DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}},
		Usage: capki.UsageBoth, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, p.hub.Cert, certPEM)
	testca.WriteFile(t, p.hub.Key, keyPEM)
	hub := start(t, dir, "hub", withTLSKeys(hubTOML(p, ""), `renew_before = "1h"`)+caTOML("2h"))
	waitUntil(t, 10*time.Second, "hub renewed", func() bool { return hub.renewals(p.hub.Cert).Renewals >= 1 })
	st := hub.renewals(p.hub.Cert)
	if !strings.HasPrefix(st.Via, "local [ca] ") || !strings.HasPrefix(hub.Status().Renewals[0].Signer, "local [ca] ") {
		t.Errorf("via %q, want the local [ca]", st.Via)
	}
	c, err := tls.Dial("tcp", hub.ServerAddrs()[0].String(), &tls.Config{RootCAs: poolOfCert(ca.Cert), ServerName: "hub.test", NextProtos: []string{wire.ALPN}})
	if err == nil {
		got := c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
		c.Close()
		if got != st.Serial {
			t.Errorf("handshake presents serial %s, status says %s", got, st.Serial)
		}
	}
	// Two hours' validity renewed with renew_before 1h: due in an hour, not again now.
	if st.Renewals != 1 || time.Until(st.RenewAt) < 50*time.Minute {
		t.Errorf("after one renewal: %+v", st)
	}
}

func poolOfCert(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// TestRenewedTunnelStillRevocable: a site renewed over its tunnel keeps
// that tunnel on the renewed certificate, yet revoking the certificate
// the tunnel was opened with still cuts it at once.
func TestRenewedTunnelStillRevocable(t *testing.T) {
	dir := t.TempDir()
	ca, p, sites := renewPKI(t, dir, time.Hour, "site-a")
	p.site = sites["site-a"]
	hub := start(t, dir, "hub", hubTOML(p, "")+caTOML("1h"))
	site := start(t, dir, "site", withTLSKeys(siteTOML(p, hub.ServerAddrs()[0].String()), `renew_before = "1h"`))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	first := site.currentLeaf(p.site.Cert)
	waitUntil(t, 10*time.Second, "renewed", func() bool { return site.renewals(p.site.Cert).Renewals >= 1 })
	if err := hub.Reload(); err != nil { // a recheck: the tunnel stays
		t.Fatal(err)
	}
	if err := ca.Revoke(first.SerialNumber, capki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CRL(0); err != nil {
		t.Fatal(err)
	}
	hub.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", "serial "+first.SerialNumber.Text(16), "was revoked")
	if n := countLines(hub.log.String(), "closing tunnel"); n != 1 {
		t.Errorf("%d tunnels closed, want 1 (after the revocation only)", n)
	}
}

// TestHubRenewalAnnounced: the hub renews its own certificate from its
// [ca] and announces it over its live tunnels; the site rechecks its
// tunnel with the new certificate, so the tunnel outlives the hub's first
// one. An announcement not signed by the new key over this tunnel is
// refused.
func TestHubRenewalAnnounced(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 8s")
	}
	dir := t.TempDir()
	ca, p, sites := renewPKI(t, dir, time.Hour, "site-a")
	p.site = sites["site-a"]
	certPEM, keyPEM, err := ca.Issue(capki.IssueOptions{Names: capki.Names{CommonName: "hub", DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}},
		Usage: capki.UsageBoth, Validity: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, p.hub.Cert, certPEM)
	testca.WriteFile(t, p.hub.Key, keyPEM)
	hub := start(t, dir, "hub", withTLSKeys(hubTOML(p, ""), `renew_before = "3s"`)+caTOML("1h"))
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	first := hubTunnel(t, site).Peer
	site.log.WaitFor(t, 10*time.Second, "peer announced its renewed certificate", `cert="CN=\"hub\""`)
	waitUntil(t, 10*time.Second, "hub's first certificate expired", func() bool { return time.Now().After(first.NotAfter) })
	if err := site.Reload(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(site.log.String(), "closing tunnel") || countLines(site.log.String(), "tunnel connected") != 1 {
		t.Error("the site's tunnel did not outlive the hub's first certificate")
	}

	// Forged: the hub's new certificate, signed by another key.
	tn := hubTunnel(t, site)
	other, _ := capki.GenerateKey("")
	leaf := hub.currentLeaf(p.hub.Cert)
	payload, err := updatePayload(tn, other, capki.CertPEM(leaf), leaf)
	if err != nil {
		t.Fatal(err)
	}
	_, err = askPeer(tn, wire.OpCertUpdate, payload)
	if err == nil || !strings.Contains(err.Error(), "not signed by the new certificate's key over this tunnel") {
		t.Errorf("forged announcement: %v", err)
	}
}

// gaugeValue reads the gauge name from the agent's registry, as /metrics
// would show it.
func gaugeValue(t *testing.T, r *running, name string) float64 {
	t.Helper()
	mfs, err := r.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestRenewAt: renewal is due renew_before ahead of expiry, or with a third
// of the lifetime left when renew_before is unset or not shorter than the
// lifetime (docs/certificates.md, Renewal over the tunnel).
func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	for _, tc := range []struct {
		before time.Duration
		want   time.Time
	}{
		{0, nb.Add(60 * 24 * time.Hour)},
		{10 * 24 * time.Hour, nb.Add(80 * 24 * time.Hour)},
		{90 * 24 * time.Hour, nb.Add(60 * 24 * time.Hour)},
		{365 * 24 * time.Hour, nb.Add(60 * 24 * time.Hour)},
	} {
		if got := renewAt(leaf, tc.before); !got.Equal(tc.want) {
			t.Errorf("renew_before %v: renewAt = %v, want %v", tc.before, got, tc.want)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestRenewalLeavesOutsideCertificates: a certificate no connected peer
// signs for (an outside CA's) is left alone: said once, not retried as a
// failure.
func TestRenewalLeavesOutsideCertificates(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	site := start(t, dir, "site", withTLSKeys(siteTOML(p, hub.ServerAddrs()[0].String()), `renew_before = "24h"`))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	site.renew.poke()
	site.log.WaitFor(t, 10*time.Second, "certificate is due for renewal, but no connected peer signs for its issuer", "none of the 1 connected peers signs renewals for")
	site.renew.poke()
	waitUntil(t, 5*time.Second, "status says why", func() bool { return strings.Contains(site.renewals(p.site.Cert).LastError, "not renewed by Postern") })
	if strings.Contains(site.log.String(), "certificate renewal failed") || counterValue(site.renew.own.WithLabelValues("failed")) != 0 {
		t.Error("an outside certificate counted as a failed renewal")
	}
	if n := countLines(site.log.String(), "no connected peer signs for its issuer"); n != 1 {
		t.Errorf("said %d times, want once", n)
	}
}

// TestControlUnknownOperation: an operation this agent does not know is
// answered as such, and the tunnel carries on.
func TestControlUnknownOperation(t *testing.T) {
	_, site := startPair(t, "")
	_, err := askPeer(hubTunnel(t, site), "no.such-op", []byte("x"))
	var ce *wire.ControlError
	if !errors.As(err, &ce) || ce.Reply.Code != wire.ControlUnknownOp || !strings.Contains(err.Error(), `unknown control operation "no.such-op"`) {
		t.Fatalf("unknown operation: %v", err)
	}
	// ca.info from an agent without [ca]: unavailable, with the reason.
	_, err = askPeer(hubTunnel(t, site), wire.OpCAInfo, nil)
	if !errors.As(err, &ce) || ce.Reply.Code != wire.ControlUnavailable || !strings.Contains(err.Error(), "this agent has no [ca]") {
		t.Fatalf("ca.info without [ca]: %v", err)
	}
	if strings.Contains(site.log.String(), "tunnel lost") {
		t.Error("the tunnel was lost")
	}
}

// hubTunnel is the site's live tunnel to the hub, once it is published.
func hubTunnel(t testing.TB, site *running) *tunnel.Tunnel {
	t.Helper()
	var tn *tunnel.Tunnel
	waitUntil(t, 10*time.Second, "the site's tunnel is published", func() bool {
		if ts := site.clients["hub"].Tunnels(); len(ts) > 0 {
			tn = ts[0]
			return true
		}
		return false
	})
	return tn
}
