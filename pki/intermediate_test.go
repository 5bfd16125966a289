package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/pki"
)

// chainOf splits a chain file into certificates.
func chainOf(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestIntermediateConstraints: a partner's intermediate may sign leaves
// only, for the names it is permitted; kinds with nothing permitted are
// excluded; its leaves carry it in their chain and verify to the root.
func TestIntermediateConstraints(t *testing.T) {
	root, err := pki.NewCA(pki.InitOptions{CommonName: "Hub Root", Intermediates: true})
	if err != nil {
		t.Fatal(err)
	}
	if root.Cert.MaxPathLen != 1 {
		t.Fatalf("root with intermediates: MaxPathLen = %d, want 1", root.Cert.MaxPathLen)
	}
	dir := filepath.Join(t.TempDir(), "partner-a")
	partner, err := pki.InitIntermediate(dir, root, pki.IntermediateOptions{CommonName: "Partner A CA",
		Permit: pki.Constraints{DNS: []string{"Partner-A.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := partner.Cert
	switch {
	case !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero:
		t.Errorf("intermediate: IsCA %v, MaxPathLen %d (zero %v); want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	case !c.PermittedDNSDomainsCritical || len(c.PermittedDNSDomains) != 1 || c.PermittedDNSDomains[0] != "partner-a.example.com":
		t.Errorf("permitted DNS: %q (critical %v)", c.PermittedDNSDomains, c.PermittedDNSDomainsCritical)
	case len(c.ExcludedURIDomains) != 1 || len(c.ExcludedIPRanges) != 2 || len(c.ExcludedDNSDomains) != 0:
		t.Errorf("exclusions: uri %q, ip %v, dns %q; want every URI and IP excluded, no DNS", c.ExcludedURIDomains, c.ExcludedIPRanges, c.ExcludedDNSDomains)
	}
	if !partner.IsIntermediate() || root.IsIntermediate() {
		t.Fatal("IsIntermediate is wrong")
	}
	if r := root.Issued(); len(r) != 1 || r[0].Usage != "ca" {
		t.Fatalf("root index: %+v, want the intermediate recorded as ca", r)
	}

	// The partner's folder works like any CA folder.
	reopened, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := reopened.Issue(pki.IssueOptions{Usage: pki.UsageClient, Names: pki.Names{DNSNames: []string{"gw.partner-a.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	chain := chainOf(t, certPEM)
	if len(chain) != 2 || !chain[1].Equal(c) {
		t.Fatalf("leaf file holds %d certificates; want the leaf and the intermediate", len(chain))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf under the intermediate does not verify to the root: %v", err)
	}

	for _, names := range []pki.Names{
		{DNSNames: []string{"gw.partner-b.example.com"}},
		{DNSNames: []string{"example.com"}},
		{DNSNames: []string{"gw.partner-a.example.com"}, URIs: []*url.URL{mustURL(t, "spiffe://partner-a.example.com/gw")}},
		{DNSNames: []string{"gw.partner-a.example.com"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}},
	} {
		_, _, err := reopened.Issue(pki.IssueOptions{Usage: pki.UsageClient, Names: names})
		if err == nil || !strings.Contains(err.Error(), "is outside what the CA CN=Partner A CA may certify (its name constraints permit dns:partner-a.example.com)") {
			t.Errorf("issue %+v under the constrained CA: %v; want refused", names, err)
		}
	}
}

func TestIntermediateRefuses(t *testing.T) {
	leafOnly := newCA(t)
	root, err := pki.NewCA(pki.InitOptions{CommonName: "Hub Root", Intermediates: true})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	permit := pki.Constraints{DNS: []string{"a.example.com"}}
	tests := []struct {
		name string
		ca   *pki.CA
		opts pki.IntermediateOptions
		want string
	}{
		{"root without intermediates", leafOnly, pki.IntermediateOptions{CommonName: "P", Permit: permit},
			"the CA CN=Test CA may not sign other CAs (its path length is 0): make a CA for partners with `postern pki init --intermediates`, give its ca.crt to your agents, and sign partners' CAs with that one"},
		{"no constraints", root, pki.IntermediateOptions{CommonName: "P"},
			"no names permitted: give at least one --permit-dns, --permit-uri or --permit-ip (an unconstrained partner CA could certify any name)"},
		{"wildcard", root, pki.IntermediateOptions{CommonName: "P", Permit: pki.Constraints{DNS: []string{"*.a.example.com"}}},
			`permitted domain "*.a.example.com": write the domain without "*"; it permits every name under it`},
		{"outlives root", root, pki.IntermediateOptions{CommonName: "P", Permit: permit, Validity: 20 * 365 * 24 * time.Hour},
			"the certificate would outlive the CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.SignIntermediate(key.Public(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignIntermediate: %v\nwant %s", err, tt.want)
			}
		})
	}
	// An intermediate cannot sign another CA (path length 0).
	inter, err := root.SignIntermediate(key.Public(), pki.IntermediateOptions{CommonName: "P", Permit: permit})
	if err != nil {
		t.Fatal(err)
	}
	sub := &pki.CA{Cert: inter, Key: key}
	if _, err := sub.SignIntermediate(key.Public(), pki.IntermediateOptions{CommonName: "Q", Permit: permit}); err == nil {
		t.Fatal("an intermediate signed another CA")
	}
}
