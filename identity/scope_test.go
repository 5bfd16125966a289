package identity

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCA is a CA certificate and key for the scope tests.
type testCA struct {
	cert *x509.Certificate
	key  any
}

// newCA makes a CA named cn, self-signed when parent is nil, else issued by
// parent (an intermediate).
func newCA(t testing.TB, cn string, parent *testCA) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, any(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

// leaf issues a certificate for dns under ca.
func (ca *testCA) leaf(t testing.TB, dns string) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dns},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{dns},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseScope(t *testing.T) {
	const hexSum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct{ in, want, kind, ca string }{
		{"dns:A.example.com from ca:sha256:" + strings.ToUpper(hexSum), "dns:a.example.com from ca:sha256:" + hexSum, KindDNS, "sha256:" + hexSum},
		{"* from ca:spki:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", "* from ca:spki:" + hexSum, KindAny, "spki:" + hexSum},
		{"cn:Legacy Gateway from ca:sha256:" + hexSum, "cn:Legacy Gateway from ca:sha256:" + hexSum, KindCN, "sha256:" + hexSum},
		{"uri:spiffe://example.com/p/* from ca:sha256:" + hexSum, "uri:spiffe://example.com/p/* from ca:sha256:" + hexSum, KindURI, "sha256:" + hexSum},
		{"ip:10.0.0.0/8 from ca:sha256:" + hexSum, "ip:10.0.0.0/8 from ca:sha256:" + hexSum, KindIP, "sha256:" + hexSum},
		// "from" without "ca:" is part of a cn: value, as it always was.
		{"cn:Data from Partner", "cn:Data from Partner", KindCN, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p := mustParse(t, tt.in)
			if p.String() != tt.want || p.Kind != tt.kind || p.CA != tt.ca {
				t.Fatalf("Parse(%q) = %q (kind %q, ca %q), want %q (kind %q, ca %q)", tt.in, p, p.Kind, p.CA, tt.want, tt.kind, tt.ca)
			}
			if again := mustParse(t, p.String()); again != p {
				t.Fatalf("Parse(String()) = %#v, want %#v", again, p)
			}
		})
	}
}

func TestParseScopeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"dns:a.example.com from ca:", `nothing after "from ca:"; want "from ca:sha256:<hex>" or "from ca:spki:<hex>"`},
		{"dns:a.example.com from ca:cn:Partner A", `ca "cn:Partner A": name the CA by sha256 (fingerprint of the CA certificate) or spki (hash of its public key), as in "from ca:sha256:<64 hex digits>" (postern pki show CA.crt prints it)`},
		{"dns:a.example.com from ca:sha256:abc", "ca: sha256 fingerprint: got 3 hex digits, want 64 (SHA-256 of the certificate; ':' separators allowed)"},
		{"dns:a.example.com from ca:sha256:", `ca: empty value after "sha256:"`},
		{"dns:a.example.com  from ca:sha256:abc", "leading or trailing whitespace; remove it"},
		{"dsn:a from ca:sha256:abc", `unknown kind "dsn"; want dns, ip, uri, cn, ou, sha256, spki, or "*" alone`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Parse(%q) error:\n got %v\nwant %s", tt.in, err, tt.want)
			}
		})
	}
}

// TestMatchVerifiedScope is the partner impersonation case: two trusted
// CAs, and CA B issues a certificate with partner A's name.
func TestMatchVerifiedScope(t *testing.T) {
	caA, caB := newCA(t, "Partner A CA", nil), newCA(t, "Partner B CA", nil)
	interA := newCA(t, "Partner A Issuing", caA)
	real := caA.leaf(t, "site-a.example.com")
	forged := caB.leaf(t, "site-a.example.com")
	viaInter := interA.leaf(t, "site-a.example.com")
	chain := func(cs ...*x509.Certificate) [][]*x509.Certificate { return [][]*x509.Certificate{cs} }
	scopedA := mustParse(t, "dns:site-a.example.com").WithCA(caA.cert)
	spkiA := mustParse(t, "dns:site-a.example.com from ca:spki:"+SPKIHash(caA.cert))
	interScope := mustParse(t, "* from ca:sha256:"+Fingerprint(interA.cert))
	tests := []struct {
		name   string
		p      Pattern
		chains [][]*x509.Certificate
		want   bool
	}{
		{"A's leaf, scoped to A", scopedA, chain(real, caA.cert), true},
		{"B's forgery, scoped to A", scopedA, chain(forged, caB.cert), false},
		{"B's forgery, unscoped", scopedA.Unscoped(), chain(forged, caB.cert), true},
		{"A's leaf, by A's key", spkiA, chain(real, caA.cert), true},
		{"B's forgery, by A's key", spkiA, chain(forged, caB.cert), false},
		{"under A's intermediate, scoped to A's root", scopedA, chain(viaInter, interA.cert, caA.cert), true},
		{"under A's intermediate, scoped to it", interScope, chain(viaInter, interA.cert, caA.cert), true},
		{"A's root leaf, scoped to the intermediate", interScope, chain(real, caA.cert), false},
		{"A in a second chain", scopedA, [][]*x509.Certificate{{real, caB.cert}, {real, caA.cert}}, true},
		{"the leaf itself is not its CA", mustParse(t, "* from ca:sha256:"+Fingerprint(real)), chain(real, caA.cert), false},
		{"wrong name, right CA", mustParse(t, "dns:site-b.example.com").WithCA(caA.cert), chain(real, caA.cert), false},
		{"no chains", scopedA, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.MatchVerified(tt.chains); got != tt.want {
				t.Fatalf("%q.MatchVerified = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
	if scopedA.Match(real) {
		t.Fatal("a scoped pattern matched a bare leaf: Match cannot see the chain and must refuse")
	}
	l := List{mustParse(t, "dns:other.example.com"), scopedA}
	if p, ok := l.MatchVerified(chain(real, caA.cert)); !ok || p != scopedA {
		t.Fatalf("List.MatchVerified = %v, %v; want %v", p, ok, scopedA)
	}
	if _, ok := l.MatchVerified(chain(forged, caB.cert)); ok {
		t.Fatal("List.MatchVerified let B's forgery through")
	}
}

func TestAnchors(t *testing.T) {
	caA, caB := newCA(t, "Partner A CA", nil), newCA(t, "Partner B CA", nil)
	interA := newCA(t, "Partner A Issuing", caA)
	names := func(cs []*x509.Certificate) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.Subject.CommonName)
		}
		return strings.Join(s, ", ")
	}
	tests := []struct {
		bundle []*x509.Certificate
		want   string
	}{
		{[]*x509.Certificate{caA.cert}, "Partner A CA"},
		{[]*x509.Certificate{caA.cert, interA.cert}, "Partner A CA"},
		{[]*x509.Certificate{interA.cert, caA.cert}, "Partner A CA"},
		{[]*x509.Certificate{caA.cert, caA.cert}, "Partner A CA"},
		{[]*x509.Certificate{caA.cert, caB.cert}, "Partner A CA, Partner B CA"},
		{[]*x509.Certificate{interA.cert, caB.cert}, "Partner A Issuing, Partner B CA"},
	}
	for _, tt := range tests {
		if got := names(Anchors(tt.bundle)); got != tt.want {
			t.Errorf("Anchors(%s) = %s, want %s", names(tt.bundle), got, tt.want)
		}
	}
}

func TestCheckScope(t *testing.T) {
	caA, caB := newCA(t, "Partner A CA", nil), newCA(t, "Partner B CA", nil)
	two := []*x509.Certificate{caA.cert, caB.cert}
	for _, s := range []string{"sha256:" + Fingerprint(caA.cert), "spki:" + SPKIHash(caB.cert), "dns:a.example.com from ca:sha256:" + Fingerprint(caA.cert)} {
		if err := CheckScope(mustParse(t, s), two, "ca.pem"); err != nil {
			t.Errorf("CheckScope(%q): %v", s, err)
		}
	}
	if err := CheckScope(mustParse(t, "dns:a.example.com"), two[:1], "ca.pem"); err != nil {
		t.Errorf("one CA: %v", err)
	}
	err := CheckScope(mustParse(t, "dns:a.example.com"), two, "ca.pem")
	want := `"dns:a.example.com" names no CA, but this agent trusts 2 CAs (ca.pem), and any of them can issue a certificate with that name; write it as one of:` +
		` "dns:a.example.com from ca:sha256:` + Fingerprint(caA.cert) + `" (CN="Partner A CA");` +
		` "dns:a.example.com from ca:sha256:` + Fingerprint(caB.cert) + `" (CN="Partner B CA")`
	if err == nil || err.Error() != want {
		t.Fatalf("CheckScope error:\n got %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrNoCA) {
		t.Fatal("error does not wrap ErrNoCA")
	}
	peer := newCert(t, certSpec{cn: "self-signed peer"})
	err = CheckScope(mustParse(t, "cn:x"), []*x509.Certificate{caA.cert, peer}, "ca.pem")
	want = `"cn:x" names no CA, but this agent trusts 2 CAs (ca.pem), and any of them can issue a certificate with that name; write it as one of:` +
		` "cn:x from ca:sha256:` + Fingerprint(caA.cert) + `" (CN="Partner A CA");` +
		` "sha256:` + Fingerprint(peer) + `" (CN="self-signed peer", a peer certificate, not a CA: pin it)`
	if err == nil || err.Error() != want {
		t.Fatalf("CheckScope with a self-signed peer in the bundle:\n got %v\nwant %s", err, want)
	}
	for _, s := range []string{"*", "cn:x", "ou:x", "ip:10.0.0.1", "uri:spiffe://x/y"} {
		if CheckScope(mustParse(t, s), two, "ca.pem") == nil {
			t.Errorf("CheckScope(%q) passed with two CAs", s)
		}
	}
}
