package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/postern-tunnel/postern/internal/fuzzedit"
)

// The requests the CSR fuzzer starts from. Their keys are Ed25519, whose
// signatures are deterministic, so every fuzz process (coordinator and
// workers) builds the same bytes and an edit means the same thing in each.
func fuzzRequests(t testing.TB) [][]byte {
	key := func(label string) ed25519.PrivateKey {
		s := sha256.Sum256([]byte("postern pki fuzz " + label))
		return ed25519.NewKeyFromSeed(s[:])
	}
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	var out [][]byte
	add := func(tmpl *x509.CertificateRequest, label string) {
		der, err := x509.CreateCertificateRequest(nil, tmpl, key(label))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	add(&x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "site-a.example.com", OrganizationalUnit: []string{"ops"}},
		DNSNames:    []string{"site-a.example.com", "API.Site-A.example.com"},
		IPAddresses: []net.IP{net.IPv4(192, 0, 2, 7).To4()},
		URIs:        []*url.URL{mustURL("spiffe://example.com/site-a")},
	}, "a")
	add(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "partner-b"}}, "b")
	// Asks for more than the CA copies: CA basic constraints, certSign,
	// another organisation, an email address.
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7})
	add(&x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "greedy", Organization: []string{"Evil"}},
		DNSNames:       []string{"*.example.com"},
		EmailAddresses: []string{"a@example.com"},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: ku},
		},
	}, "c")
	// Names the CA must refuse.
	add(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "bad"}, DNSNames: []string{"a..example.com", "*.com"}}, "d")
	add(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "tab\there"}}, "e")
	add(&x509.CertificateRequest{URIs: []*url.URL{mustURL("partner-b")}}, "f")
	add(&x509.CertificateRequest{}, "g")
	return out
}

var fuzzValidities = []time.Duration{0, time.Hour, 400 * 24 * time.Hour, 20 * 365 * 24 * time.Hour, -time.Hour, 11 * 365 * 24 * time.Hour}

// FuzzSignRequest is `postern pki sign` on a partner's file: ParseRequestPEM,
// then the CA's Sign with a usage and validity of the CA's choosing. A
// signed certificate must carry exactly the names the request asked for
// (DNS names in lower case), each passing the CA's rules, never be a CA,
// have exactly the usage the CA chose, lie within the CA's validity and
// certify the request's key; a request with a name the rules refuse, or a
// usage or validity the CA cannot give, never signs.
//
// The input is one of fuzzRequests plus edits to its DER, or, for a base
// past them, the file itself: inputs stay short for Go's minimiser.
func FuzzSignRequest(f *testing.F) {
	root, err := NewCA(InitOptions{CommonName: "fuzz ca", Intermediates: true})
	if err != nil {
		f.Fatal(err)
	}
	// A partner's CA under root, limited to example.com and 192.0.2.0/24.
	interKey, err := GenerateKey("")
	if err != nil {
		f.Fatal(err)
	}
	_, lan, _ := net.ParseCIDR("192.0.2.0/24")
	interCert, err := root.SignIntermediate(interKey.Public(), IntermediateOptions{CommonName: "partner ca",
		Permit: Constraints{DNS: []string{"example.com"}, URIDomains: []string{"example.com"}, IPRanges: []*net.IPNet{lan}}})
	if err != nil {
		f.Fatal(err)
	}
	inter := &CA{Cert: interCert, Key: interKey}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	intermediates.AddCert(interCert)
	reqs := fuzzRequests(f)
	for i := range reqs {
		f.Add(uint8(i), []byte(nil), uint8(3))
	}
	f.Add(uint8(0), []byte(nil), uint8(1|2<<2))      // server, 400 days
	f.Add(uint8(0), []byte(nil), uint8(2|3<<2))      // client, 20 years: outlives the CA
	f.Add(uint8(1), []byte(nil), uint8(0))           // no usage
	f.Add(uint8(1), []byte(nil), uint8(3|4<<2))      // negative validity
	f.Add(uint8(0), []byte{0, 0, 60, 'X'}, uint8(3)) // an altered request
	f.Add(uint8(2), []byte{2, 0, 100, 0}, uint8(3))  // a cut one
	f.Add(uint8(0), []byte(nil), uint8(3|0x80))      // by the partner's CA
	f.Add(uint8(2), []byte(nil), uint8(3|0x80))      // wildcard, by the partner's CA
	f.Add(uint8(1), []byte(nil), uint8(3|0x80))      // a CN only
	f.Add(uint8(255), []byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"), uint8(3))

	f.Fuzz(func(t *testing.T, base uint8, patch []byte, opts uint8) {
		if len(patch) > 160 {
			return // long inputs only slow the minimiser; edits reach every byte of a request
		}
		file := patch
		if int(base) < len(reqs) {
			file = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: fuzzedit.Apply(reqs[base], patch)})
		}
		csr, err := ParseRequestPEM(file)
		if err != nil {
			return
		}
		usage := Usage(opts % 4)
		validity := fuzzValidities[int(opts>>2&0x1f)%len(fuzzValidities)]
		issuer := root
		if opts&0x80 != 0 {
			issuer = inter
		}
		now := time.Now()
		ca := &CA{Cert: issuer.Cert, Key: issuer.Key, Time: func() time.Time { return now }}
		cert, err := ca.Sign(csr, SignOptions{Usage: usage, Validity: validity})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if issuer == root && signable(csr, usage, validity, now, root.Cert) {
				t.Fatalf("a request every rule accepts was refused: %v", err)
			}
			return
		}
		checkSigned(t, issuer, csr, cert, usage, validity, now)
		if issuer == inter {
			// The chain a peer builds must hold, name constraints included.
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("certificate signed by the partner's CA does not verify: %v", err)
			}
		}
		if n := len(ca.Issued()); n != 1 {
			t.Errorf("index holds %d records after one signature", n)
		}
	})
}

func checkSigned(t *testing.T, root *CA, csr *x509.CertificateRequest, cert *x509.Certificate, usage Usage, validity time.Duration, now time.Time) {
	t.Helper()
	if err := cert.CheckSignatureFrom(root.Cert); err != nil {
		t.Fatalf("signed certificate does not verify with the CA: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("signed a request whose signature does not verify: %v", err)
	}
	if !samePublicKey(cert.PublicKey, csr.PublicKey) {
		t.Fatal("the certificate certifies another key than the request's")
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Fatalf("signed certificate: IsCA %v, basic constraints %v; want a leaf", cert.IsCA, cert.BasicConstraintsValid)
	}
	if cert.KeyUsage&^(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment) != 0 {
		t.Fatalf("key usage %b beyond digitalSignature and keyEncipherment", cert.KeyUsage)
	}
	var eku []x509.ExtKeyUsage
	switch usage {
	case UsageServer:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case UsageClient:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case UsageBoth:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	default:
		t.Fatalf("signed with usage %d", usage)
	}
	if !slices.Equal(cert.ExtKeyUsage, eku) || len(cert.UnknownExtKeyUsage) > 0 {
		t.Fatalf("extended key usage %v %v, want %v", cert.ExtKeyUsage, cert.UnknownExtKeyUsage, eku)
	}
	for _, e := range cert.Extensions {
		switch {
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 15}), e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 37}),
			e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}), e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}),
			e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 14}), e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 35}):
		default:
			t.Fatalf("signed certificate carries extension %v", e.Id)
		}
	}

	// Names: exactly what was asked, and each acceptable.
	if cert.Subject.CommonName != csr.Subject.CommonName || !slices.Equal(cert.Subject.OrganizationalUnit, csr.Subject.OrganizationalUnit) {
		t.Fatalf("subject %q, request asked %q", cert.Subject, csr.Subject)
	}
	for _, a := range cert.Subject.Names {
		if !a.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 3}) && !a.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 11}) {
			t.Fatalf("subject attribute %v copied from the request", a.Type)
		}
	}
	want := make([]string, len(csr.DNSNames))
	for i, d := range csr.DNSNames {
		want[i] = strings.ToLower(d)
	}
	if !slices.Equal(cert.DNSNames, want) {
		t.Fatalf("DNS names %q, request asked %q", cert.DNSNames, csr.DNSNames)
	}
	if !slices.EqualFunc(cert.IPAddresses, csr.IPAddresses, net.IP.Equal) {
		t.Fatalf("IP addresses %v, request asked %v", cert.IPAddresses, csr.IPAddresses)
	}
	if !slices.EqualFunc(cert.URIs, csr.URIs, func(a, b *url.URL) bool { return a.String() == b.String() }) {
		t.Fatalf("URIs %v, request asked %v", cert.URIs, csr.URIs)
	}
	if len(cert.EmailAddresses) > 0 {
		t.Fatalf("email addresses %q copied from the request", cert.EmailAddresses)
	}
	if cert.Subject.CommonName == "" && len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs) == 0 {
		t.Fatal("signed a certificate with no identity")
	}
	for _, s := range append([]string{cert.Subject.CommonName}, cert.Subject.OrganizationalUnit...) {
		if s != "" && !goodAttribute(s) {
			t.Fatalf("signed subject attribute %q", s)
		}
	}
	for _, d := range cert.DNSNames {
		if !goodDNSName(d) {
			t.Fatalf("signed DNS name %q", d)
		}
	}
	for _, ip := range cert.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			t.Fatalf("signed IP address %x", []byte(ip))
		}
	}
	for _, u := range cert.URIs {
		s := u.String()
		if u.Scheme == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			t.Fatalf("signed URI %q", s)
		}
	}

	// Validity: within the CA's, and what the CA chose.
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < 0 || cert.NotAfter.After(root.Cert.NotAfter) || cert.NotBefore.Before(root.Cert.NotBefore) {
		t.Fatalf("valid %s to %s (asked %s), CA valid %s to %s", cert.NotBefore, cert.NotAfter, validity, root.Cert.NotBefore, root.Cert.NotAfter)
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got > validity+ClockSkew+time.Second {
		t.Fatalf("valid for %s, asked %s", got, validity)
	}
	if cert.NotBefore.After(now) || cert.NotAfter.Before(now) {
		t.Fatalf("valid %s to %s: not now (%s)", cert.NotBefore, cert.NotAfter, now)
	}
}

// signable is the CA's rules for an unconstrained CA, written apart from
// the code: what it accepts must sign.
func signable(csr *x509.CertificateRequest, usage Usage, validity time.Duration, now time.Time, ca *x509.Certificate) bool {
	if usage < UsageServer || usage > UsageBoth || validity < 0 {
		return false
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if now.Add(validity).After(ca.NotAfter) || checkPublicKey(csr.PublicKey) != nil {
		return false
	}
	if csr.Subject.CommonName == "" && len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.URIs) == 0 {
		return false
	}
	for _, s := range append([]string{csr.Subject.CommonName}, csr.Subject.OrganizationalUnit...) {
		if s != "" && !goodAttribute(s) {
			return false
		}
	}
	for _, ou := range csr.Subject.OrganizationalUnit {
		if ou == "" {
			return false
		}
	}
	for _, d := range csr.DNSNames {
		if !goodDNSName(strings.ToLower(d)) {
			return false
		}
	}
	for _, u := range csr.URIs {
		s := u.String()
		if u.Scheme == "" || u.Host == "" && u.Opaque == "" && u.Path == "" ||
			strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return false
		}
	}
	return true
}

// goodAttribute: 1 to 64 printable characters of valid UTF-8.
func goodAttribute(s string) bool {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > 64 {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// goodDNSName: lower-case labels of letters, digits, '-' and '_', none
// empty or over 63 or starting or ending with '-'; a "*" first label only
// before at least two more.
func goodDNSName(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) >= 3 {
			continue
		}
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		if strings.ContainsFunc(l, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) {
			return false
		}
	}
	return true
}

// FuzzCAState feeds Open the CA's state files (index.json, revoked.json,
// crlnumber) beside a valid certificate and key. Open must never panic; an
// error names the file at fault; a CA it loads can sign its CRL, and its
// state saved and loaded again is the same.
func FuzzCAState(f *testing.F) {
	// A real CA folder gives the seeds; tmpfs, when there is one, keeps
	// the fsyncs of every input cheap.
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "postern-fuzz-ca-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	ca, err := Init(dir, InitOptions{CommonName: "fuzz ca"})
	if err != nil {
		f.Fatal(err)
	}
	certPEM, _, err := ca.Issue(IssueOptions{Names: Names{CommonName: "site-a"}, Usage: UsageClient})
	if err != nil {
		f.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		f.Fatal(err)
	}
	if err := ca.Revoke(cert.SerialNumber, ReasonKeyCompromise); err != nil {
		f.Fatal(err)
	}
	if _, err := ca.CRL(0); err != nil {
		f.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		f.Fatalf("Open of a CA's own state: %v", err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	compact := func(b []byte) []byte {
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			f.Fatal(err)
		}
		return out.Bytes()
	}
	index, revoked, number := compact(read(IndexFile)), compact(read(RevokedFile)), read(CRLNumberFile)
	if n := len(index) + len(revoked) + len(number); n > maxStateInput {
		f.Fatalf("seed of %d bytes, over the %d the fuzz function reads", n, maxStateInput)
	}
	f.Add(index, revoked, number)
	f.Add([]byte(`{"certificates":[]}`), []byte(`{"revoked":[]}`), []byte("0\n"))
	f.Add([]byte(`{"certificates":[{"serial":"zz"}]}`), []byte(`{}`), []byte("1"))
	f.Add([]byte(`{}`), []byte(`{"revoked":[{"serial":"-5","reason":99}]}`), []byte("1"))
	f.Add([]byte(`{"certificates":5}`), revoked, number)
	f.Add(index, []byte(`{"revoked":[{"serial":"a","revoked_at":"2026-01-01T00:00:00+01:00"}]}`), []byte("9223372036854775807"))
	f.Add(index, revoked, []byte("-1"))
	f.Add([]byte("{"), revoked, []byte(""))

	f.Fuzz(func(t *testing.T, index, revoked, number []byte) {
		if len(index)+len(revoked)+len(number) > maxStateInput {
			return // long inputs only slow the minimiser
		}
		files := map[string][]byte{IndexFile: index, RevokedFile: revoked, CRLNumberFile: number}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.Remove(filepath.Join(dir, CRLFile))
		loaded, err := Open(dir)
		if err != nil {
			named := false
			for name := range files {
				named = named || strings.Contains(err.Error(), filepath.Join(dir, name))
			}
			if !named {
				t.Fatalf("Open: %q names none of the state files", err)
			}
			return
		}
		before := stateJSON(t, loaded)
		if _, err := loaded.CRL(0); err != nil {
			t.Fatalf("loaded CA cannot sign its CRL: %v", err)
		}
		loaded.mu.Lock()
		err = loaded.saveIndex()
		if err == nil {
			err = loaded.saveRevoked()
		}
		loaded.mu.Unlock()
		if err != nil {
			t.Fatalf("save loaded state: %v", err)
		}
		again, err := Open(dir)
		if err != nil {
			t.Fatalf("Open of the state it saved: %v", err)
		}
		if after := stateJSON(t, again); !bytes.Equal(before, after) {
			t.Fatalf("state changed by a save and a load:\n%s\n%s", before, after)
		}
		if again.crlNumber != loaded.crlNumber {
			t.Fatalf("CRL number %d after reload, want %d", again.crlNumber, loaded.crlNumber)
		}
	})
}

const maxStateInput = 600

func stateJSON(t *testing.T, ca *CA) []byte {
	b, err := json.Marshal(struct {
		I []Record
		R []Revocation
	}{ca.Issued(), ca.Revoked()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignRequestSeeds: the requests FuzzSignRequest starts from are judged
// as they must be, so the fuzzer starts on both sides of the CA's checks.
func TestSignRequestSeeds(t *testing.T) {
	root, err := NewCA(InitOptions{CommonName: "fuzz ca"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"",
		"",
		"",
		`request: DNS name "a..example.com": each dot-separated label must have 1 to 63 characters`,
		`request: common name "tab\there" contains a control character`,
		`request: URI "partner-b" is not absolute`,
		"request: no identity",
	}
	reqs := fuzzRequests(t)
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, %d expectations", len(reqs), len(want))
	}
	for i, der := range reqs {
		csr, err := ParseRequestPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		now := time.Now()
		ca := &CA{Cert: root.Cert, Key: root.Key, Time: func() time.Time { return now }}
		cert, err := ca.Sign(csr, SignOptions{Usage: UsageBoth})
		if want[i] == "" {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			checkSigned(t, root, csr, cert, UsageBoth, 0, now)
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), want[i]) {
			t.Errorf("request %d: Sign error %v, want %q", i, err, want[i])
		}
	}
}

// TestOpenRefusesUnusableState: state FuzzCAState found Open accepting
// though the CA could not work with it (the CRL failed later without
// naming the file, or wrote a CRL number no Open could read back).
func TestOpenRefusesUnusableState(t *testing.T) {
	for _, tc := range []struct {
		name, file, data, want string
	}{
		{"negative serial", RevokedFile, `{"revoked":[{"serial":"-5","revoked_at":"2026-01-01T00:00:00Z","reason":1}]}`,
			`revoked.json: entry 1: serial "-5" is not a hex number`},
		{"no revocation date", RevokedFile, `{"revoked":[{"serial":"a","reason":1}]}`,
			`revoked.json: entry 1 (serial a): no revoked_at date`},
		{"unknown reason", RevokedFile, `{"revoked":[{"serial":"a","revoked_at":"2026-01-01T00:00:00Z","reason":99}]}`,
			`revoked.json: entry 1 (serial a): revocation reason 99 is not one this CA issues`},
		{"serial in capitals", IndexFile, `{"certificates":[{"serial":"AB"}]}`,
			`index.json: entry 1: serial "AB" must be written "ab"`},
		{"last CRL number", CRLNumberFile, "9223372036854775807\n",
			`crlnumber: CRL number 9223372036854775807 has no successor`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Init(dir, InitOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, tc.want)) {
				t.Fatalf("Open: %v\nwant %s", err, filepath.Join(dir, tc.want))
			}
		})
	}
}
