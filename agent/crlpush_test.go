package agent

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
)

// ownCA gives a site its own copy of the CA bundle, so what it keeps
// beside the bundle lands in the site's files, not the CA folder.
func ownCA(t testing.TB, f testca.Files, dir, name string) testca.Files {
	t.Helper()
	data, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	f.CA = filepath.Join(dir, name+"-ca.crt")
	testca.WriteFile(t, f.CA, data)
	return f
}

// TestCRLPushCutsRevokedPeer: `postern pki revoke` on a running hub cuts
// the revoked site's tunnel to the hub at once, and the hub's CRL pushed to
// site-b cuts the tunnel site-a holds to site-b directly; site-b keeps the
// CRL across a restart without the hub and still refuses site-a.
func TestCRLPushCutsRevokedPeer(t *testing.T) {
	dir := t.TempDir()
	ca, p, sites := renewPKI(t, dir, time.Hour, "site-a", "site-b")
	a, b := ownCA(t, sites["site-a"], dir, "site-a"), ownCA(t, sites["site-b"], dir, "site-b")
	if _, err := ca.CRL(0); err != nil { // the hub starts with an empty CRL, pushed on connect
		t.Fatal(err)
	}
	echo := testnet.Listen(t)
	testnet.Serve(t, echo, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, "")+caTOML("1h"))
	hubAddr := hub.ServerAddrs()[0].String()
	bTOML := fmt.Sprintf(`
name = "site-b"
shutdown_timeout = "1s"
[tls]
cert = %q
key = %q
ca = %q
[[server]]
listen = "127.0.0.1:0"
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "200ms"
%s`, b.Cert, b.Key, b.CA, hubAddr, serviceTOML("echo", echo.Addr().String(), "dns:site-a.test"))
	siteB := start(t, dir, "site-b", bTOML)
	siteB.log.WaitFor(t, 10*time.Second, "CRL received from peer", `issuer="CN=\"Renewal Test CA\""`, "revoked=0")
	bAddr := siteB.ServerAddrs()[0].String()
	siteA := start(t, dir, "site-a", fmt.Sprintf(`
name = "site-a"
shutdown_timeout = "1s"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "200ms"
[[client]]
name = "b"
servers = [%q]
server_name = "site-b.test"
backoff_min = "50ms"
backoff_max = "200ms"
[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "b"
`, a.Cert, a.Key, a.CA, hubAddr, bAddr))
	siteA.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	siteA.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=b")
	conn := testnet.Dial(t, siteA.ForwardAddrs()[0].String())
	roundTrip(t, conn, "before")

	// What `postern pki revoke SERIAL` does: record it, write ca.crl.
	leaf := siteA.currentLeaf(a.Cert)
	if err := ca.Revoke(leaf.SerialNumber, capki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CRL(0); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	revoked := `client certificate CN=\"site-a\" was revoked`
	hub.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", revoked, "ca.crl")
	t.Logf("the hub cut site-a %v after ca.crl was written", time.Since(written).Round(time.Millisecond))
	siteB.log.WaitFor(t, 5*time.Second, "CRL received from peer", "revoked=1")
	siteB.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", revoked, "pushed by", `CN=\"hub\"`)
	t.Logf("site-b cut site-a %v after ca.crl was written", time.Since(written).Round(time.Millisecond))
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("site-a's stream through site-b survived the revocation")
	}
	siteB.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, revoked)
	hub.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, revoked)
	// Counted: the empty CRL and the one with site-a, each sent by the hub
	// and received by site-b.
	if n := counterValue(hub.crls.metric.WithLabelValues("sent")); n < 2 {
		t.Errorf("hub: postern_crl_push_total{result=sent} = %v, want at least 2", n)
	}
	if n := counterValue(siteB.crls.metric.WithLabelValues("received")); n != 2 {
		t.Errorf("site-b: postern_crl_push_total{result=received} = %v, want 2", n)
	}

	// Kept beside site-b's CA bundle, read again at start: with the hub
	// gone, a restarted site-b still refuses site-a.
	saved := strings.TrimSuffix(b.CA, ".crt") + ".pushed.crl"
	data, err := os.ReadFile(saved)
	if err != nil {
		t.Fatalf("pushed CRL not kept: %v", err)
	}
	crls, err := trust.VerifyCRL(saved, data, []*x509.Certificate{ca.Cert})
	if err != nil || len(crls) != 1 || len(crls[0].List.RevokedCertificateEntries) != 1 {
		t.Fatalf("kept CRL: %v", err)
	}
	hub.stop(t)
	siteB.stop(t)
	bTOML = strings.Replace(bTOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", bAddr), 1)
	again := start(t, dir, "site-b", bTOML)
	again.log.WaitFor(t, 5*time.Second, "pushed CRL loaded", "crls=1")
	again.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, revoked, "ca.pushed.crl")
}

// TestCRLTooLargeToPush: a CRL past the control message bound is applied
// on the hub and not pushed, and the hub says so once.
func TestCRLTooLargeToPush(t *testing.T) {
	dir := t.TempDir()
	ca, p, sites := renewPKI(t, dir, time.Hour, "site-a")
	p.site = ownCA(t, sites["site-a"], dir, "site-a")
	tmpl := &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
	for i := range 2500 {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: new(big.Int).Lsh(big.NewInt(int64(i+1)), 100), RevocationTime: time.Now().Add(-time.Hour)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(der) <= maxPushedCRL {
		t.Fatalf("test CRL of %d bytes is not past the bound %d", len(der), maxPushedCRL)
	}
	testca.WriteFile(t, filepath.Join(dir, "pki", capki.CRLFile), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	hub := start(t, dir, "hub", hubTOML(p, "")+caTOML("1h"))
	hub.log.WaitFor(t, 5*time.Second, "[ca] CRL applied here, but too large to push to peers", "revoked=2500", "limit=65526")
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if n := countLines(hub.log.String(), "too large to push"); n != 1 {
		t.Errorf("said %d times, want once", n)
	}
	if strings.Contains(site.log.String(), "CRL received") || strings.Contains(hub.log.String(), "CRL push failed") {
		t.Error("a CRL past the bound was pushed")
	}
}
