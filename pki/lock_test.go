package pki_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/postern-tunnel/postern/pki"
)

// Two handles on one CA folder stand for a running hub (opened at start,
// signing renewals) and an operator's `postern pki` command: what either
// writes must survive the other's next write.
func TestTwoHandlesKeepEachOthersRecords(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	hub, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, cn string) {
		t.Helper()
		if _, _, err := ca.NewCertificate(pki.IssueOptions{Names: pki.Names{CommonName: cn}, Usage: pki.UsageClient}); err != nil {
			t.Fatal(err)
		}
	}
	issue(operator, "by-operator")
	issue(hub, "by-hub")
	revoked, _, err := operator.NewCertificate(pki.IssueOptions{Names: pki.Names{CommonName: "revoked"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.RevokeCertificate(revoked, pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.CRL(0); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.CRL(0); err != nil {
		t.Fatal(err)
	}

	after, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range after.Issued() {
		got[r.Subject] = true
	}
	for _, cn := range []string{"CN=by-operator", "CN=by-hub", "CN=revoked"} {
		if !got[cn] {
			t.Errorf("index.json lost %s; it holds %v", cn, got)
		}
	}
	if rv := after.Revoked(); len(rv) != 1 {
		t.Errorf("revoked.json holds %d revocations, want 1", len(rv))
	}
	crlPEM, err := os.ReadFile(filepath.Join(dir, pki.CRLFile))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pki.ParseCRLPEM(crlPEM)
	if err != nil {
		t.Fatal(err)
	}
	// Init signed CRL 1; the operator's and the hub's CRLs are 2 and 3, and
	// the last carries the revocation the hub recorded.
	if crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 1 {
		t.Errorf("ca.crl: number %v with %d entries, want number 3 with 1", crl.Number, len(crl.RevokedCertificateEntries))
	}
}

// Many signers at once through separate handles: every record kept.
func TestConcurrentSignersKeepEveryRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca, err := pki.Open(dir)
			if err != nil {
				t.Error(err)
				return
			}
			if _, _, err := ca.NewCertificate(pki.IssueOptions{Names: pki.Names{CommonName: "site-" + string(rune('a'+i))}, Usage: pki.UsageClient}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	after, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(after.Issued()); got != n {
		t.Errorf("index.json holds %d records after %d concurrent signings, want %d", got, n, n)
	}
}
