package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/wire"
)

// enrollHubFor starts a hub with [ca] on a fresh CA folder; its server
// certificate carries 127.0.0.1.
func enrollHubFor(t *testing.T, caSection string) (hub *running, caDir string) {
	t.Helper()
	dir := t.TempDir()
	caDir = filepath.Join(dir, "pki")
	ca, err := capki.Init(caDir, capki.InitOptions{CommonName: "Enroll CA"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(capki.IssueOptions{Usage: capki.UsageServer,
		Names: capki.Names{DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}})
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, filepath.Join(dir, "hub.crt"), certPEM)
	testca.WriteFile(t, filepath.Join(dir, "hub.key"), keyPEM)
	hub = start(t, dir, "hub", fmt.Sprintf(`
name = "hub"
shutdown_timeout = "5s"
[tls]
cert = "hub.crt"
key = "hub.key"
ca = "pki/ca.crt"
[ca]
dir = "pki"
%s
[[server]]
listen = "127.0.0.1:0"
`, caSection))
	return hub, caDir
}

// TestEnrollInProcess: the site's request carries the token and a CSR for
// the key it made, nothing else; the certificate it gets is for that key,
// under the token's CA; the hub logs the grant with the source address.
func TestEnrollInProcess(t *testing.T) {
	hub, caDir := enrollHubFor(t, `identities = ["dns:*.sites.test"]`)
	addr := hub.ServerAddrs()[0].String()
	var mu sync.Mutex
	var got []wire.EnrollRequest
	seen := func(r wire.EnrollRequest) { mu.Lock(); got = append(got, r); mu.Unlock() }
	hub.enroll.received.Store(&seen)

	tok, _, err := capki.Invite(caDir, capki.InviteOptions{Names: capki.Names{DNSNames: []string{"b.sites.test"}}, Hub: addr})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Enroll(context.Background(), EnrollOptions{Token: tok.String()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(e.KeyPEM, []byte("PRIVATE KEY")) || e.Cert.DNSNames[0] != "b.sites.test" {
		t.Fatalf("enrolled %v", e.Cert.DNSNames)
	}
	mu.Lock()
	received := slices.Clone(got)
	mu.Unlock()
	if len(received) != 1 || received[0].Token != tok.String() {
		t.Fatalf("hub received %d requests", len(received))
	}
	csr, err := x509.ParseCertificateRequest(received[0].CSR)
	if err != nil {
		t.Fatalf("hub received something other than a CSR: %v", err)
	}
	if !e.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Fatal("the CSR is not for the site's key")
	}
	secret, err := e.Key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(received[0].CSR, secret) || bytes.Contains([]byte(received[0].Token), secret) {
		t.Fatal("the request holds private key material")
	}
	hub.log.WaitFor(t, 5*time.Second, "enrollment granted", "peer_addr=127.0.0.1:", "invitation="+tok.IDString(), "dns:b.sites.test")
	if sha256.Sum256(must(capki.ParseCertPEM(e.CAPEM)).Raw) != tok.CA {
		t.Fatal("CA bundle is not the token's CA")
	}
	_, err = Enroll(context.Background(), EnrollOptions{Token: tok.String()})
	if r, ok := err.(*EnrollRefusedError); !ok || r.Code != wire.EnrollUsed {
		t.Fatalf("second enrollment: %v", err)
	}
	if ok, used := enrollCount(t, hub, "ok"), enrollCount(t, hub, "used"); ok != 1 || used != 1 {
		t.Fatalf("postern_enrollments_total: ok %v, used %v", ok, used)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestEnrollNotServedWithoutCA: a hub without [ca] does not speak the
// enrollment protocol; the site says so.
func TestEnrollNotServedWithoutCA(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	tok := capki.Token{Hub: hub.ServerAddrs()[0].String(), CA: sha256.Sum256(p.ca.Cert.Raw), Expires: time.Now().Add(time.Hour),
		Identities: []string{"dns:b.sites.test"}}
	_, err := Enroll(context.Background(), EnrollOptions{Token: tok.String()})
	if err == nil || !strings.Contains(err.Error(), "does not serve enrollment") {
		t.Fatalf("got %v", err)
	}
}

// enrollDial opens an enrollment connection without checking the hub.
func enrollDial(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{wire.EnrollALPN}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.EnrollALPN {
		t.Fatalf("ALPN %q", p)
	}
	return c
}

// TestEnrollOnlyRedeems: an enrollment connection that sends anything but
// a request is answered "malformed" and closed; a hub with [ca] still
// refuses a tunnel without a client certificate; and no more than
// MaxEnrollments run at once.
func TestEnrollOnlyRedeems(t *testing.T) {
	hub, _ := enrollHubFor(t, "")
	addr := hub.ServerAddrs()[0].String()

	c := enrollDial(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	resp, err := wire.ReadEnrollResponse(c)
	if err != nil || resp.Code != wire.EnrollMalformed {
		t.Fatalf("got %+v, %v", resp, err)
	}
	hub.log.WaitFor(t, 5*time.Second, "enrollment refused", "peer_addr=127.0.0.1:", "cause=malformed")

	// A tunnel (ALPN postern/1) without a client certificate is refused as before.
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{wire.ALPN}})
	if err == nil {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("tunnel without a client certificate: %v", err)
	}

	// MaxEnrollments connections that send nothing hold every slot: the
	// next one is answered "unavailable" at once.
	for range MaxEnrollments {
		held := enrollDial(t, addr)
		hub.log.WaitFor(t, 10*time.Second, "enrollment connection", "peer_addr="+held.LocalAddr().String())
	}
	c = enrollDial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err = wire.ReadEnrollResponse(c)
	if err != nil || resp.Code != wire.EnrollUnavailable || !strings.Contains(resp.Reason, "busy") {
		t.Fatalf("past MaxEnrollments: %+v, %v", resp, err)
	}
}

// TestEnrollTimeout: an enrollment connection that does not send a whole
// request in time is closed, and the hub says so.
func TestEnrollTimeout(t *testing.T) {
	hub, _ := enrollHubFor(t, "")
	hub.enroll.timeout.Store(int64(200 * time.Millisecond))
	c := enrollDial(t, hub.ServerAddrs()[0].String())
	c.Write([]byte{wire.EnrollVersion, 0, 100, 'p'}) // a token of 100 bytes, 1 sent
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v: want the hub to close", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the hub did not close the connection within 10s")
	}
	hub.log.WaitFor(t, 5*time.Second, "enrollment refused", "peer_addr="+c.LocalAddr().String(), "cause=timeout", "no whole request within 200ms")
}

// enrollCount reads postern_enrollments_total{result} from the agent's
// registry, as /metrics would show it.
func enrollCount(t *testing.T, r *running, result string) float64 {
	t.Helper()
	mfs, err := r.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "postern_enrollments_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no postern_enrollments_total{result=%q}", result)
	return 0
}

// TestEnrollCAReloadNeedsRestart: a reload does not change [ca] (the
// enrollment rules); it says a restart is needed.
func TestEnrollCAReloadNeedsRestart(t *testing.T) {
	hub, _ := enrollHubFor(t, "")
	data := must(os.ReadFile(hub.cfg.Path))
	testca.WriteFile(t, hub.cfg.Path, bytes.Replace(data, []byte(`dir = "pki"`), []byte("dir = \"pki\"\nvalidity = \"30d\""), 1))
	rep, err := hub.ReloadReport()
	if err != nil || !strings.Contains(rep, "restart needed for: [ca]") {
		t.Fatalf("reload: %v\n%s", err, rep)
	}
}

// TestEnrollClip: whatever a refusal's words hold (names from the CSR,
// error texts), what goes to the site fits the wire's reason rules.
func TestEnrollClip(t *testing.T) {
	for _, in := range []string{"plain", strings.Repeat("é", 400), "a\nb\x00c\x7f", "bad \xff utf-8", strings.Repeat("x", 2000)} {
		out := clip(in)
		if _, err := wire.AppendEnrollResponse(nil, wire.EnrollResponse{Code: wire.EnrollUsed, Reason: out}); err != nil {
			t.Errorf("clip(%.20q) = %.20q: %v", in, out, err)
		}
	}
	if clip("plain") != "plain" {
		t.Error("clip changed a plain reason")
	}
}

// TestEnrollStopClosesConnections: an agent that stops closes its
// enrollment connections instead of waiting for their deadline.
func TestEnrollStopClosesConnections(t *testing.T) {
	hub, _ := enrollHubFor(t, "")
	hub.enroll.timeout.Store(int64(time.Hour))
	c := enrollDial(t, hub.ServerAddrs()[0].String())
	hub.log.WaitFor(t, 10*time.Second, "enrollment connection", "peer_addr="+c.LocalAddr().String())
	hub.stop(t) // fails after 60s if the handler kept running
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v: want the connection closed", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection stayed open after the agent stopped")
	}
}
