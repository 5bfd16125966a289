package trust

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
)

// signCRL makes a CRL of ca revoking serials, with the given next update.
func signCRL(t testing.TB, ca *testca.CA, next time.Time, serials ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: next.Add(-24 * time.Hour), NextUpdate: next}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute), ReasonCode: 1,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func crlPEM(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }

// endpoint writes a leaf of ca, ca's bundle and the given CRL files into a
// folder and returns the files.
func endpoint(t *testing.T, ca *testca.CA, crls ...[]byte) Files {
	t.Helper()
	dir := t.TempDir()
	f := ca.Issue(t, testca.Options{CN: "me"}).Write(t, dir, "me", ca)
	files := Files{Cert: f.Cert, Key: f.Key, CA: f.CA, MinVersion: config.DefaultMinVersion}
	for i, c := range crls {
		p := filepath.Join(dir, "crl"+string(rune('a'+i)))
		testca.WriteFile(t, p, c)
		files.CRL = append(files.CRL, p)
	}
	return files
}

func TestParseCRLs(t *testing.T) {
	ca := testca.New(t, "CA")
	der := signCRL(t, ca, time.Now().Add(time.Hour), big.NewInt(7))
	two := append(append([]byte("junk before\n"), crlPEM(der)...), crlPEM(signCRL(t, ca, time.Now().Add(time.Hour)))...)
	for _, tc := range []struct {
		name  string
		data  []byte
		count int
		err   string
	}{
		{"DER", der, 1, ""},
		{"PEM", crlPEM(der), 1, ""},
		{"two PEM blocks", two, 2, ""},
		{"PEM without a CRL", ca.PEM, 0, "no PEM CRL found (expected -----BEGIN X509 CRL-----)"},
		{"garbage", []byte("hello"), 0, "not a CRL in PEM or DER form"},
		{"broken PEM CRL", []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0, "CRL 1 in the file:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCRLs(tc.data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != tc.count {
				t.Fatalf("got %d CRLs, %v; want %d", len(got), err, tc.count)
			}
		})
	}
}

// TestLoadMaterialCRL: a CRL must be signed by a CA in the bundle, and the
// message says which CA signed it.
func TestLoadMaterialCRL(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	other := testca.New(t, "Other CA")
	impostor := testca.New(t, "Partners CA") // same name, different key

	f := endpoint(t, ca, signCRL(t, ca, time.Now().Add(time.Hour), big.NewInt(1)))
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.CRLs) != 1 || m.CRLs[0].Issuer.Subject.CommonName != "Partners CA" {
		t.Fatalf("CRLs %+v", m.CRLs)
	}

	for _, tc := range []struct {
		name string
		crl  []byte
		want []string
	}{
		{"foreign CA", signCRL(t, other, time.Now().Add(time.Hour)), []string{"crl ", `issued by CN="Other CA", which is not in the ca bundle (trusted: CN="Partners CA")`}},
		{"same name, other key", signCRL(t, impostor, time.Now().Add(time.Hour)), []string{`its signature does not verify with CA CN="Partners CA"`}},
		{"not a CRL", []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), []string{"no PEM CRL found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadMaterial(endpoint(t, ca, tc.crl))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	t.Run("policies", func(t *testing.T) {
		f := endpoint(t, ca)
		f.CRLStale = "maybe"
		if _, err := LoadMaterial(f); err == nil || !strings.Contains(err.Error(), `crl_stale "maybe"`) {
			t.Errorf("crl_stale: %v", err)
		}
		f.CRLStale, f.OCSP = "", "sometimes"
		if _, err := LoadMaterial(f); err == nil || !strings.Contains(err.Error(), `ocsp "sometimes"`) {
			t.Errorf("ocsp: %v", err)
		}
	})
}

// TestRecheck: a peer chain is checked against the current CA bundle and
// CRLs; only what says the peer is untrusted counts on a recheck.
func TestRecheck(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	peer := ca.Issue(t, testca.Options{CN: "site-a"})
	chain := []*x509.Certificate{peer.Cert}
	now := time.Now()

	clean := endpoint(t, ca, signCRL(t, ca, now.Add(time.Hour), big.NewInt(42)))
	revoked := endpoint(t, ca, signCRL(t, ca, now.Add(time.Hour), peer.Cert.SerialNumber))
	stale := endpoint(t, ca, signCRL(t, ca, now.Add(-time.Hour)))
	foreign := endpoint(t, testca.New(t, "Other CA"))

	load := func(f Files) *Credentials {
		m, err := LoadMaterial(f)
		if err != nil {
			t.Fatal(err)
		}
		return NewCredentials(m)
	}
	if err := load(clean).Recheck(chain, SideServer, now); err != nil {
		t.Errorf("clean CRL: %v", err)
	}
	err := load(revoked).Recheck(chain, SideServer, now)
	var re *RevokedError
	if !errors.As(err, &re) || re.Cert.SerialNumber.Cmp(peer.Cert.SerialNumber) != 0 || !strings.HasPrefix(re.Source, "CRL ") {
		t.Errorf("revoked: %v", err)
	}
	msg := Explain(err, SideServer, nil, now)
	for _, w := range []string{`client certificate CN="site-a" was revoked on`, "(reason: key-compromise)", "according to CRL " + revoked.CRL[0],
		"serial " + peer.Cert.SerialNumber.Text(16), "sha256:" + identity.Fingerprint(peer.Cert), `issuer CN="Partners CA"`} {
		if !strings.Contains(msg, w) {
			t.Errorf("explanation %q lacks %q", msg, w)
		}
	}
	if err := load(stale).Recheck(chain, SideServer, now); err != nil {
		t.Errorf("a stale CRL closed a live tunnel: %v", err)
	}
	err = load(foreign).Recheck(chain, SideServer, now)
	if msg := Explain(err, SideServer, []string{`CN="Other CA"`}, now); !strings.Contains(msg, "signed by an unknown authority") {
		t.Errorf("foreign CA: %q", msg)
	}
	// A server certificate without serverAuth does not verify as a server.
	clientOnly := ca.Issue(t, testca.Options{CN: "c", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	err = load(clean).Recheck([]*x509.Certificate{clientOnly.Cert}, SideClient, now)
	if msg := Explain(err, SideClient, nil, now); !strings.Contains(msg, "may not be used for this purpose") {
		t.Errorf("usage: %q", msg)
	}
}

// TestStaleCRLOnHandshake: with crl_stale = "refuse" a stale CRL refuses
// the peers it covers; with "warn" it does not.
func TestStaleCRLOnHandshake(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	peer := ca.Issue(t, testca.Options{CN: "site-a"})
	f := endpoint(t, ca, signCRL(t, ca, time.Now().Add(-3*time.Hour)))
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(m)
	chains := [][]*x509.Certificate{{peer.Cert, ca.Cert}}
	err = c.checkRevocation(m, chains, SideServer, time.Now(), false)
	msg := Explain(err, SideServer, nil, time.Now())
	for _, w := range []string{`cannot check client certificate CN="site-a" for revocation`, "is stale: its next update was", "3h0m ago", `crl_stale = "warn"`, "NTP"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q lacks %q", msg, w)
		}
	}
	f.CRLStale = CRLStaleWarn
	m, _ = LoadMaterial(f)
	if err := c.checkRevocation(m, chains, SideServer, time.Now(), false); err != nil {
		t.Errorf("crl_stale = warn refused: %v", err)
	}
}

// TestReload: unchanged files are not reloaded, changed ones are, and a
// broken file keeps the old material and says what is wrong.
func TestReload(t *testing.T) {
	ca := testca.New(t, "CA")
	f := endpoint(t, ca)
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(m)
	if changed, err := c.Reload(); changed || err != nil {
		t.Fatalf("unchanged files: changed=%v err=%v", changed, err)
	}
	next := ca.Issue(t, testca.Options{CN: "me again"})
	testca.WriteFile(t, f.Cert, next.CertPEM)
	changed, err := c.Reload()
	if err == nil || !strings.Contains(err.Error(), "does not match certificate") || changed {
		t.Fatalf("cert without its key: changed=%v err=%v", changed, err)
	}
	if c.Load() != m {
		t.Fatal("a failed reload replaced the material")
	}
	testca.WriteFile(t, f.Key, next.KeyPEM)
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatalf("new pair: changed=%v err=%v", changed, err)
	}
	if c.Load().Leaf.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatal("new certificate not in use")
	}
	os.Remove(f.CA)
	if _, err := c.Reload(); err == nil || !strings.Contains(err.Error(), "ca: open ") {
		t.Fatalf("missing CA: %v", err)
	}
}

// TestExplainPostern: the refusals Postern adds name the certificate and
// what to do.
func TestExplainPostern(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	now := time.Now()
	for _, tc := range []struct {
		name string
		err  error
		side Side
		want []string
	}{
		{"pin", &PinError{Cert: hub.Cert, Pins: []string{"dns:other.test"}}, SideClient,
			[]string{`server certificate CN="hub" matches none of peer = [dns:other.test]`, `"dns:hub.test"`, "sha256:" + identity.Fingerprint(hub.Cert), "update peer"}},
		{"ocsp hard", &OCSPError{Cert: hub.Cert, URL: "http://ocsp.test", Err: errors.New("connection refused")}, SideClient,
			[]string{`cannot check server certificate CN="hub" with its OCSP responder http://ocsp.test: connection refused`, `ocsp = "soft"`}},
		{"revoked CA", &RevokedError{Cert: ca.Cert, Source: "OCSP responder http://x"}, SideServer,
			[]string{`the CA CN="Partners CA" in the client's chain was revoked according to OCSP responder http://x`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Explain(tc.err, tc.side, nil, now)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}

// FuzzCRL: CRL files come from disk, possibly half written or not CRLs at
// all; loading them must not panic, and a CRL that loads was signed by the
// CA.
func FuzzCRL(f *testing.F) {
	ca := testca.New(f, "Fuzz CA")
	der := signCRL(f, ca, time.Now().Add(time.Hour), big.NewInt(1), big.NewInt(99))
	f.Add(der)
	f.Add(crlPEM(der))
	f.Add(append(crlPEM(der), crlPEM(der)...))
	f.Add(der[:len(der)/2])
	f.Add([]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"))
	f.Add(ca.PEM)
	cas := []*x509.Certificate{ca.Cert}
	f.Fuzz(func(t *testing.T, data []byte) {
		crls, err := parseCRLFile("fuzz.crl", data, cas)
		if err != nil {
			return
		}
		for _, c := range crls {
			if err := c.List.CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatalf("loaded a CRL that %s did not sign: %v", Subject(ca.Cert), err)
			}
			c.lookup(big.NewInt(99))
			c.Stale(time.Now())
		}
	})
}
