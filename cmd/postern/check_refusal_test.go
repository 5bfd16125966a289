package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestCheckConnectRefusalReason: a hub that refuses a site's certificate
// tells `postern check --connect` why, in the hub's words, when the
// site's chain verifies to a CA the hub trusts: here a revoked
// certificate, and an identity the hub's peer list does not name (whose
// entries the site is not shown). A site from a CA the hub does not trust
// learns only the alert, as before.
func TestCheckConnectRefusalReason(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
	revoked := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.Cert.SerialNumber, RevocationTime: now.Add(-time.Minute)}}}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl := filepath.Join(dir, "ca.crl")
	testca.WriteFile(t, crl, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	hubLog := &testnet.LogBuffer{}
	hub := startAgent(t, dir, fmt.Sprintf(`name = "hub"
[tls]
cert = %q
key = %q
ca = %q
crl = [%q]
[[server]]
listen = "127.0.0.1:0"
peer = ["dns:site-a.test", "dns:partner-b.test"]
`, hubFiles.Cert, hubFiles.Key, hubFiles.CA, crl), hubLog)
	hubAddr := hub.ServerAddrs()[0].String()

	site := func(name string, leaf *testca.Leaf) string {
		f := leaf.Write(t, dir, name, ca)
		testca.WriteFile(t, f.CA, ca.PEM) // the site trusts the hub's CA
		return writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
`, f.Cert, f.Key, f.CA, hubAddr))
	}
	for _, tc := range []struct {
		name string
		leaf *testca.Leaf
		want []string
		not  []string
	}{
		{"identity", ca.Issue(t, testca.Options{CN: "site-c", DNS: []string{"site-c.test"}}),
			[]string{"ERROR   " + hubAddr + `: hub refused this agent's certificate: client certificate CN="site-c" matches none of the identities the server accepts (peer; not shown to the client): it has "cn:site-c", "dns:site-c.test"`},
			[]string{"partner-b", "site-a.test"}},
		{"revoked", revoked,
			[]string{"ERROR   " + hubAddr + `: hub refused this agent's certificate: client certificate CN="site-a" was revoked on `, "according to CRL " + crl + " — the client needs a new certificate"}, nil},
		{"unknown CA", testca.New(t, "Foreign CA").Issue(t, testca.Options{CN: "site-x"}),
			[]string{"ERROR   " + hubAddr + `: the server rejected our certificate (alert: unknown certificate authority)`},
			[]string{"hub refused", "Test CA\"; trusted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := checkRun(t, "-c", site(strings.ReplaceAll(tc.name, " ", "-"), tc.leaf), "--connect")
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("output has %q", n)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
	// The hub logged the first refusal in full, peer list included (the
	// later ones from the same address are counted, as before).
	hubLog.WaitFor(t, 5*time.Second, "tunnel refused", `matches none of peer = [dns:site-a.test, dns:partner-b.test]`)
	if strings.Contains(hubLog.String(), "tunnel accepted") {
		t.Errorf("a refused site got a tunnel; hub log:\n%s", hubLog)
	}
}
