package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// newKey returns a fresh ECDSA P-256 key.
func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// certSpec lists what a test certificate carries.
type certSpec struct {
	cn   string
	ous  []string
	dns  []string
	ips  []string
	uris []string
	key  *ecdsa.PrivateKey // nil: a fresh key
}

// newCert returns a self-signed certificate, parsed back from DER so that
// Raw and RawSubjectPublicKeyInfo are what a TLS peer would present.
func newCert(t testing.TB, s certSpec) *x509.Certificate {
	t.Helper()
	key := s.key
	if key == nil {
		key = newKey(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: s.cn, OrganizationalUnit: s.ous},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     s.dns,
	}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, raw := range s.uris {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), crypto.Signer(key))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// mustParse parses a pattern the test knows is valid.
func mustParse(t testing.TB, s string) Pattern {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return p
}

func TestParseCanonical(t *testing.T) {
	const hexSum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	colons := strings.ToUpper(hexSum[:2])
	for i := 2; i < len(hexSum); i += 2 {
		colons += ":" + strings.ToUpper(hexSum[i:i+2])
	}
	raw := sha256.Sum256([]byte("test"))
	b64 := base64.StdEncoding.EncodeToString(raw[:])

	tests := []struct {
		in, kind, value string
	}{
		{"*", KindAny, ""},
		{"dns:partner-a.example.com", KindDNS, "partner-a.example.com"},
		{"dns:Partner-A.Example.COM.", KindDNS, "partner-a.example.com"},
		{"dns:*.example.com", KindDNS, "*.example.com"},
		{"dns:localhost", KindDNS, "localhost"},
		{"dns:_svc.example.com", KindDNS, "_svc.example.com"},
		{"dns:xn--bcher-kva.example", KindDNS, "xn--bcher-kva.example"},
		{"ip:192.0.2.7", KindIP, "192.0.2.7"},
		{"ip:192.0.2.7/32", KindIP, "192.0.2.7"},
		{"ip:::ffff:192.0.2.7", KindIP, "192.0.2.7"},
		{"ip:10.0.0.0/8", KindIP, "10.0.0.0/8"},
		{"ip:::ffff:10.0.0.0/104", KindIP, "10.0.0.0/8"},
		{"ip:2001:DB8::7", KindIP, "2001:db8::7"},
		{"ip:2001:db8::/32", KindIP, "2001:db8::/32"},
		{"ip:0.0.0.0/0", KindIP, "0.0.0.0/0"},
		{"uri:spiffe://example.com/partner-b", KindURI, "spiffe://example.com/partner-b"},
		{"uri:spiffe://example.com/partner/*", KindURI, "spiffe://example.com/partner/*"},
		{"uri:urn:example:partner", KindURI, "urn:example:partner"},
		{"cn:Legacy Gateway", KindCN, "Legacy Gateway"},
		{"cn:*", KindCN, "*"},
		{"cn:a:b", KindCN, "a:b"},
		{"ou:Operations", KindOU, "Operations"},
		{"sha256:" + hexSum, KindSHA256, hexSum},
		{"sha256:" + strings.ToUpper(hexSum), KindSHA256, hexSum},
		{"sha256:" + colons, KindSHA256, hexSum},
		{"spki:" + colons, KindSPKI, hexSum},
		{"spki:" + b64, KindSPKI, hexSum},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p := mustParse(t, tt.in)
			if p.Kind != tt.kind || p.Value != tt.value {
				t.Fatalf("Parse(%q) = {%q %q}, want {%q %q}", tt.in, p.Kind, p.Value, tt.kind, tt.value)
			}
			again := mustParse(t, p.String())
			if again != p {
				t.Fatalf("Parse(%q) = %#v, want %#v", p.String(), again, p)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", `empty pattern; want kind:value with kind dns, ip, uri, cn, ou, sha256, spki, or "*" alone`},
		{" dns:a.example.com", "leading or trailing whitespace; remove it"},
		{"dns:a.example.com\n", "leading or trailing whitespace; remove it"},
		{"dsn:x", `unknown kind "dsn"; want dns, ip, uri, cn, ou, sha256, spki, or "*" alone`},
		{"DNS:a.example.com", `unknown kind "DNS"; kinds are lower case: "dns"`},
		{"partner.example.com", `missing kind; did you mean "dns:partner.example.com"? (kinds: dns, ip, uri, cn, ou, sha256, spki, or "*" alone)`},
		{"10.0.0.1", `missing kind; did you mean "ip:10.0.0.1"? (kinds: dns, ip, uri, cn, ou, sha256, spki, or "*" alone)`},
		{"2001:db8::1", `missing kind; did you mean "ip:2001:db8::1"? (kinds: dns, ip, uri, cn, ou, sha256, spki, or "*" alone)`},
		{"spiffe://example.com/b", `missing kind; did you mean "uri:spiffe://example.com/b"? (kinds: dns, ip, uri, cn, ou, sha256, spki, or "*" alone)`},
		{"gateway", `missing kind; want kind:value with kind dns, ip, uri, cn, ou, sha256, spki, or "*" alone`},
		{"**", `missing kind; want kind:value with kind dns, ip, uri, cn, ou, sha256, spki, or "*" alone`},
		{"dns:", `empty value after "dns:"`},
		{"cn:", `empty value after "cn:"`},
		{"dns:-a.example.com", `dns name: label "-a" starts or ends with '-'`},
		{"dns:a..example.com", "dns name: empty label (leading dot or two dots in a row)"},
		{"dns:a b.example.com", "dns name: contains whitespace"},
		{"dns:a!.example.com", `dns name: '!' is not allowed in a name; use letters, digits, '-' and '_'`},
		{"dns:bücher.example", `dns name: non-ASCII character 'ü'; write it in ASCII form (xn-- names, percent-encoding)`},
		{"dns:" + strings.Repeat("a", 64) + ".com", `dns name: label "` + strings.Repeat("a", 64) + `" is longer than 63 characters`},
		{"dns:" + strings.Repeat("a.", 127) + "aa", "dns name: longer than 253 characters"},
		{"dns:*", `dns name: "*" is allowed only as the whole first label, as in *.example.com`},
		{"dns:a.*.example.com", `dns name: "*" is allowed only as the whole first label, as in *.example.com`},
		{"dns:a*.example.com", `dns name: "*" is allowed only as the whole first label, as in *.example.com`},
		{"dns:*.*.example.com", `dns name: "*" is allowed only as the whole first label, as in *.example.com`},
		{"dns:10.0.0.1", `dns name: 10.0.0.1 is an IP address; use "ip:10.0.0.1"`},
		{"ip:300.0.0.1", `ip address: "300.0.0.1" is not an IPv4 or IPv6 address; want 192.0.2.7, 2001:db8::7 or a prefix such as 10.0.0.0/8`},
		{"ip:fe80::1%eth0", `ip address: "fe80::1%eth0" has a zone; zones are not allowed`},
		{"ip:10.1.2.3/8", "ip prefix: 10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"ip:10.0.0.0/33", `ip prefix: prefix length "33": want 0-32`},
		{"ip:10.0.0.0/08", `ip prefix: prefix length "08": want 0-32`},
		{"ip:10.0.0.0/", `ip prefix: prefix length "": want 0-32`},
		{"uri:example.com/partner", "uri: no scheme; want an absolute URI such as spiffe://example.com/partner"},
		{"uri:spiffe://example.com/partner*", `uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`},
		{"uri:spiffe://example.com/*/b", `uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`},
		{"uri:spiffe://*", `uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`},
		{"uri:spiffe://example.com/a?x=/*", `uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`},
		{"uri:urn:x/*", `uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`},
		{"uri:spiffe://example.com/a b", "uri: contains whitespace"},
		{"cn: Legacy", "cn: leading or trailing whitespace; remove it"},
		{"ou:Ops\x00", `ou: control character '\x00'`},
		{"cn:\xff", "cn: not valid UTF-8"},
		{"sha256:abc", "sha256 fingerprint: got 3 hex digits, want 64 (SHA-256 of the certificate; ':' separators allowed)"},
		{"sha256:" + strings.Repeat("g", 64), `sha256 fingerprint: 'g' is not a hex digit`},
		{"sha256:" + strings.Repeat("a", 66), "sha256 fingerprint: got 66 hex digits, want 64 (SHA-256 of the certificate; ':' separators allowed)"},
		{"sha256::::", "sha256 fingerprint: got 0 hex digits, want 64 (SHA-256 of the certificate; ':' separators allowed)"},
		{"spki:abcd", "spki hash: got 4 hex digits, want 64, or 44 characters of base64 (SHA-256 of the public key)"},
		{"spki:" + strings.Repeat("!", 43) + "=", "spki hash: not valid base64 of 32 bytes"},
		{"sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 32)), `sha256 fingerprint: '=' is not a hex digit`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error %q", tt.in, p, tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Parse(%q) error:\n got %s\nwant %s", tt.in, err, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	cert := newCert(t, certSpec{
		cn:   "Legacy Gateway",
		ous:  []string{"Finance", "Operations"},
		dns:  []string{"Partner-A.Example.com", "gw.partner.example.net."},
		ips:  []string{"192.0.2.7", "2001:db8::7"},
		uris: []string{"spiffe://example.com/partner/b"},
	})
	other := newCert(t, certSpec{cn: "someone else"})
	tests := []struct {
		pattern string
		want    bool
	}{
		{"*", true},
		{"dns:partner-a.example.com", true},
		{"dns:PARTNER-A.example.com", true},
		{"dns:gw.partner.example.net", true},
		{"dns:partner-b.example.com", false},
		{"dns:example.com", false},
		{"ip:192.0.2.7", true},
		{"ip:::ffff:192.0.2.7", true},
		{"ip:192.0.2.0/24", true},
		{"ip:192.0.3.0/24", false},
		{"ip:192.0.2.8", false},
		{"ip:2001:db8::7", true},
		{"ip:2001:db8::/32", true},
		{"ip:2001:db9::/32", false},
		{"uri:spiffe://example.com/partner/b", true},
		{"uri:spiffe://example.com/partner/*", true},
		{"uri:spiffe://example.com/partner", false},
		{"uri:spiffe://example.com/*", false},
		{"cn:Legacy Gateway", true},
		{"cn:legacy gateway", false},
		{"cn:Legacy", false},
		{"ou:Operations", true},
		{"ou:Finance", true},
		{"ou:operations", false},
		{"ou:Legacy Gateway", false},
		{"sha256:" + Fingerprint(cert), true},
		{"sha256:" + Fingerprint(other), false},
		{"spki:" + SPKIHash(cert), true},
		{"spki:" + SPKIHash(other), false},
		{"sha256:" + SPKIHash(cert), false},
		{"spki:" + Fingerprint(cert), false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			if got := mustParse(t, tt.pattern).Match(cert); got != tt.want {
				t.Fatalf("Parse(%q).Match(cert) = %v, want %v", tt.pattern, got, tt.want)
			}
		})
	}
}

func TestMatchDNSWildcard(t *testing.T) {
	tests := []struct {
		pattern string
		san     string
		want    bool
	}{
		{"dns:*.example.com", "a.example.com", true},
		{"dns:*.example.com", "A.EXAMPLE.COM", true},
		{"dns:*.example.com", "a.example.com.", true},
		{"dns:*.example.com", "example.com", false},
		{"dns:*.example.com", "a.b.example.com", false},
		{"dns:*.example.com", ".example.com", false},
		{"dns:*.example.com", "aexample.com", false},
		{"dns:*.example.com", "a.example.com.evil", false},
		// A wildcard in the certificate matches only the same wildcard pattern.
		{"dns:*.example.com", "*.example.com", true},
		{"dns:a.example.com", "*.example.com", false},
		{"dns:*.b.example.com", "*.example.com", false},
		{"dns:*.example.com", "*.b.example.com", false},
		{"dns:*.example.com", "a*.example.com", false},
		{"dns:a.example.com", "a.example.com", true},
		{"dns:a.example.com", "b.a.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"/"+tt.san, func(t *testing.T) {
			cert := newCert(t, certSpec{dns: []string{tt.san}})
			if got := mustParse(t, tt.pattern).Match(cert); got != tt.want {
				t.Fatalf("Parse(%q).Match(SAN %q) = %v, want %v", tt.pattern, tt.san, got, tt.want)
			}
		})
	}
}

func TestMatchURIWildcard(t *testing.T) {
	const pattern = "uri:spiffe://example.com/partner/*"
	tests := []struct {
		san  string
		want bool
	}{
		{"spiffe://example.com/partner/b", true},
		{"spiffe://example.com/partner/*", true},
		{"spiffe://example.com/partner/b/c", false},
		{"spiffe://example.com/partner/", false},
		{"spiffe://example.com/partner", false},
		{"spiffe://example.com/partnerb", false},
		{"spiffe://example.com/partner/..", false},
		{"spiffe://example.com/partner/.", false},
		{"spiffe://example.com/partner/b?x=1", false},
		{"spiffe://example.com/partner/b#f", false},
		{"spiffe://example.org/partner/b", false},
		{"https://example.com/partner/b", false},
	}
	for _, tt := range tests {
		t.Run(tt.san, func(t *testing.T) {
			cert := newCert(t, certSpec{uris: []string{tt.san}})
			if got := mustParse(t, pattern).Match(cert); got != tt.want {
				t.Fatalf("Parse(%q).Match(SAN %q) = %v, want %v", pattern, tt.san, got, tt.want)
			}
		})
	}
}

func TestMatchIP(t *testing.T) {
	tests := []struct {
		pattern string
		san     net.IP
		want    bool
	}{
		{"ip:192.0.2.7", net.ParseIP("192.0.2.7").To4(), true},
		{"ip:192.0.2.7", net.ParseIP("192.0.2.7").To16(), true}, // 4-in-6 in the certificate
		{"ip:::ffff:192.0.2.7", net.ParseIP("192.0.2.7").To4(), true},
		{"ip:10.0.0.0/8", net.ParseIP("10.255.1.2").To16(), true},
		{"ip:10.0.0.0/8", net.ParseIP("11.0.0.1").To4(), false},
		{"ip:0.0.0.0/0", net.ParseIP("203.0.113.9").To4(), true},
		{"ip:0.0.0.0/0", net.ParseIP("2001:db8::1"), false},
		{"ip:::/0", net.ParseIP("2001:db8::1"), true},
		{"ip:::/0", net.ParseIP("192.0.2.7").To4(), true},
		{"ip:::1", net.ParseIP("::1"), true},
		{"ip:::1", net.ParseIP("127.0.0.1").To4(), false},
		{"ip:2001:db8::7", net.ParseIP("2001:db8:0:0:0:0:0:7"), true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"/"+tt.san.String(), func(t *testing.T) {
			cert := &x509.Certificate{IPAddresses: []net.IP{tt.san}}
			if got := mustParse(t, tt.pattern).Match(cert); got != tt.want {
				t.Fatalf("Parse(%q).Match(SAN %v) = %v, want %v", tt.pattern, tt.san, got, tt.want)
			}
		})
	}
}

func TestMatchHashes(t *testing.T) {
	key := newKey(t)
	first := newCert(t, certSpec{cn: "site-a", key: key})
	reissued := newCert(t, certSpec{cn: "site-a", key: key})
	spki := sha256.Sum256(first.RawSubjectPublicKeyInfo)
	fp := strings.ToUpper(Fingerprint(first))

	tests := []struct {
		name    string
		pattern string
		cert    *x509.Certificate
		want    bool
	}{
		{"fingerprint upper case", "sha256:" + fp, first, true},
		{"fingerprint of another certificate", "sha256:" + fp, reissued, false},
		{"spki hex", "spki:" + SPKIHash(first), first, true},
		{"spki survives re-issue", "spki:" + SPKIHash(first), reissued, true},
		{"spki base64", "spki:" + base64.StdEncoding.EncodeToString(spki[:]), reissued, true},
		{"spki of another key", "spki:" + SPKIHash(newCert(t, certSpec{cn: "site-a"})), first, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustParse(t, tt.pattern).Match(tt.cert); got != tt.want {
				t.Fatalf("Parse(%q).Match = %v, want %v", tt.pattern, got, tt.want)
			}
		})
	}
}

func TestMatchNil(t *testing.T) {
	for _, s := range []string{"*", "cn:x", "dns:a.example.com", "ip:10.0.0.0/8"} {
		if mustParse(t, s).Match(nil) {
			t.Errorf("Parse(%q).Match(nil) = true, want false", s)
		}
	}
	if (Pattern{}).Match(newCert(t, certSpec{cn: "x"})) {
		t.Error("zero Pattern matched a certificate")
	}
	if Fingerprint(nil) != "" || SPKIHash(nil) != "" || Identities(nil) != nil {
		t.Error("nil certificate: want empty hashes and no identities")
	}
	if got := Describe(nil); got != "<no certificate>" {
		t.Errorf("Describe(nil) = %q", got)
	}
}

func TestParseList(t *testing.T) {
	cert := newCert(t, certSpec{cn: "Legacy Gateway", dns: []string{"partner-a.example.com"}})

	t.Run("first match", func(t *testing.T) {
		l, err := ParseList([]string{"dns:partner-b.example.com", "cn:Legacy Gateway", "dns:partner-a.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := l.Match(cert)
		if !ok || p.String() != "cn:Legacy Gateway" {
			t.Fatalf("Match = %v, %v; want cn:Legacy Gateway, true", p, ok)
		}
		if got := strings.Join(l.Strings(), " | "); got != "dns:partner-b.example.com | cn:Legacy Gateway | dns:partner-a.example.com" {
			t.Fatalf("Strings() = %q", got)
		}
	})
	t.Run("no match", func(t *testing.T) {
		l, err := ParseList([]string{"dns:partner-b.example.com", "ou:Ops"})
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := l.Match(cert); ok {
			t.Fatalf("Match = %v, true; want no match", p)
		}
	})
	t.Run("empty list denies", func(t *testing.T) {
		l, err := ParseList(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := l.Match(cert); ok {
			t.Fatal("empty list matched")
		}
	})
	t.Run("bad entry", func(t *testing.T) {
		_, err := ParseList([]string{"dns:partner-a.example.com", "dsn:x", "cn:"})
		const want = `allow "dsn:x": unknown kind "dsn"; want dns, ip, uri, cn, ou, sha256, spki, or "*" alone`
		if err == nil || err.Error() != want {
			t.Fatalf("error:\n got %v\nwant %s", err, want)
		}
	})
}

func TestIdentities(t *testing.T) {
	cert := newCert(t, certSpec{
		cn:   "Legacy Gateway",
		ous:  []string{"Operations"},
		dns:  []string{"Partner-A.example.com", "*.partner.example.com"},
		ips:  []string{"192.0.2.7", "2001:db8::7"},
		uris: []string{"spiffe://example.com/partner/b"},
	})
	want := []string{
		"cn:Legacy Gateway",
		"dns:partner-a.example.com",
		"dns:*.partner.example.com",
		"ip:192.0.2.7",
		"ip:2001:db8::7",
		"uri:spiffe://example.com/partner/b",
		"ou:Operations",
		"sha256:" + Fingerprint(cert),
		"spki:" + SPKIHash(cert),
	}
	got := Identities(cert)
	if !slices.Equal(got, want) {
		t.Fatalf("Identities:\n got %q\nwant %q", got, want)
	}
	for _, id := range got {
		t.Run(id, func(t *testing.T) {
			if !mustParse(t, id).Match(cert) {
				t.Fatalf("identity %q does not match its own certificate", id)
			}
		})
	}
}

func TestFingerprints(t *testing.T) {
	cert := newCert(t, certSpec{cn: "x"})
	fp, spki := Fingerprint(cert), SPKIHash(cert)
	for name, h := range map[string]string{"Fingerprint": fp, "SPKIHash": spki} {
		if len(h) != 64 || strings.ToLower(h) != h {
			t.Errorf("%s = %q, want 64 lower-case hex digits", name, h)
		}
	}
	if sum := sha256.Sum256(cert.Raw); fp != strings.ToLower(base16(sum[:])) {
		t.Errorf("Fingerprint = %s, want SHA-256 of cert.Raw", fp)
	}
	if fp == spki {
		t.Error("Fingerprint and SPKIHash are equal")
	}
}

// base16 is an independent hex encoder for TestFingerprints.
func base16(b []byte) string {
	const digits = "0123456789ABCDEF"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}

func TestDescribe(t *testing.T) {
	t.Run("typical", func(t *testing.T) {
		cert := newCert(t, certSpec{
			cn:   "partner-b",
			ous:  []string{"Ops"},
			dns:  []string{"A.example.com", "b.example.com"},
			ips:  []string{"192.0.2.7"},
			uris: []string{"spiffe://example.com/b"},
		})
		want := `CN="partner-b" OU="Ops" dns:a.example.com,b.example.com ip:192.0.2.7 uri:spiffe://example.com/b` +
			" sha256:" + Fingerprint(cert)[:16] + "… spki:" + SPKIHash(cert)[:16] + "…"
		if got := Describe(cert); got != want {
			t.Fatalf("Describe:\n got %s\nwant %s", got, want)
		}
	})
	t.Run("hashes only", func(t *testing.T) {
		cert := newCert(t, certSpec{})
		want := "sha256:" + Fingerprint(cert)[:16] + "… spki:" + SPKIHash(cert)[:16] + "…"
		if got := Describe(cert); got != want {
			t.Fatalf("Describe:\n got %s\nwant %s", got, want)
		}
	})
	t.Run("hostile", func(t *testing.T) {
		cert := newCert(t, certSpec{
			cn:   "x\nlevel=error msg=forged",
			dns:  []string{"a b", "c,d", "e.example.com", "f.example.com", "g.example.com"},
			uris: []string{"spiffe://example.com/" + strings.Repeat("x", 100)},
		})
		got := Describe(cert)
		if strings.ContainsAny(got, "\n\r") {
			t.Fatalf("Describe has a line break: %q", got)
		}
		for _, want := range []string{
			`CN="x\nlevel=error msg=forged"`,
			`dns:"a b","c,d",e.example.com,+2 more `,
			`uri:"spiffe://example.com/` + strings.Repeat("x", 64-len("spiffe://example.com/")) + `…" `,
		} {
			if !strings.Contains(got, want) {
				t.Errorf("Describe = %s\nwant it to contain %s", got, want)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"*", "dns:*.example.com", "dns:A.Example.com.", "ip:::ffff:10.0.0.0/104", "ip:2001:db8::/32",
		"uri:spiffe://example.com/partner/*", "uri:urn:x", "cn:Legacy Gateway", "ou:Ops",
		"sha256:9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08",
		"spki:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", "dsn:x", "", " ", "dns:", "ip:10.1.2.3/8",
		"dns:a.example.com from ca:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"* from ca:spki:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", "cn:a from ca:cn:b", "cn:a from b",
		"dns:a.example.com from ca:", "ou:x from ca:sha256:00 from ca:sha256:11",
	} {
		f.Add(s)
	}
	ca := newCA(f, "Fuzz CA", nil)
	leaf := ca.leaf(f, "a.example.com")
	chains := [][]*x509.Certificate{{leaf, ca.cert}}
	// Seeds that name this run's CA and leaf, so the scoped paths match.
	f.Add("dns:a.example.com from ca:sha256:" + Fingerprint(ca.cert))
	f.Add("* from ca:spki:" + SPKIHash(ca.cert))
	cert := newCert(f, certSpec{
		cn: "Legacy Gateway", ous: []string{"Ops"},
		dns: []string{"a.example.com", "*.example.com"}, ips: []string{"10.0.0.1", "2001:db8::1"},
		uris: []string{"spiffe://example.com/partner/b"},
	})
	f.Fuzz(func(t *testing.T, s string) {
		checkScopeProperties(t, s, leaf, ca.cert, chains)
		p, err := Parse(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Parse(%q): empty error", s)
			}
			return
		}
		again, err := Parse(p.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not re-parse: %v", s, p.String(), err)
		}
		if again != p {
			t.Fatalf("Parse(%q) = %#v, re-parsed as %#v", s, p, again)
		}
		p.Match(cert)
		p.Match(nil)
	})
}

// checkScopeProperties checks what FuzzParse asserts about the CA a
// pattern names: a scoped pattern is exactly the unscoped one plus a
// "from ca:" suffix that names a hash, it never matches a bare leaf, and it
// matches a verified chain only when its name matches the leaf and its CA is
// the chain's CA.
func checkScopeProperties(t *testing.T, s string, leaf, ca *x509.Certificate, chains [][]*x509.Certificate) {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		return
	}
	name, ref, scoped := strings.Cut(p.String(), " from ca:")
	if scoped != p.Scoped() || scoped && ref != p.CA {
		t.Fatalf("Parse(%q) = %q: Scoped() = %v, CA = %q", s, p, p.Scoped(), p.CA)
	}
	if scoped && !strings.HasPrefix(p.CA, "sha256:") && !strings.HasPrefix(p.CA, "spki:") {
		t.Fatalf("Parse(%q): CA %q is not a hash", s, p.CA)
	}
	if u := p.Unscoped(); u.String() != name || u.Scoped() {
		t.Fatalf("Parse(%q).Unscoped() = %q, want %q", s, u, name)
	}
	if p.NeedsCA() && (scoped || p.Kind == KindSHA256 || p.Kind == KindSPKI) {
		t.Fatalf("Parse(%q): NeedsCA() for a pin or a scoped pattern", s)
	}
	if scoped && p.Match(leaf) {
		t.Fatalf("Parse(%q) matched a bare leaf although it names a CA", s)
	}
	caMatches := p.CA == "sha256:"+Fingerprint(ca) || p.CA == "spki:"+SPKIHash(ca)
	want := p.Unscoped().Match(leaf) && (!scoped || caMatches)
	if got := p.MatchVerified(chains); got != want {
		t.Fatalf("Parse(%q).MatchVerified = %v, want %v", s, got, want)
	}
	if p.MatchVerified(nil) {
		t.Fatalf("Parse(%q) matched no chains", s)
	}
}
