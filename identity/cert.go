package identity

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Describe limits: a log line stays short however many names a (possibly
// hostile) certificate carries.
const (
	describeMaxValues = 3  // values shown per kind, then "+N more"
	describeMaxLen    = 64 // bytes shown per value, then "…"
	describeHashLen   = 16 // hex digits shown of each hash
)

// Fingerprint returns the lower-case hex SHA-256 of the DER certificate, as
// written in a sha256: pattern. It returns "" for a nil cert.
func Fingerprint(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	s := sum(cert.Raw)
	return hex.EncodeToString(s[:])
}

// SPKIHash returns the lower-case hex SHA-256 of the certificate's
// SubjectPublicKeyInfo, as written in a spki: pattern. It stays the same
// when a certificate is re-issued for the same key. It returns "" for a
// nil cert.
func SPKIHash(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	s := sum(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:])
}

// Identities returns every identity cert carries, in pattern syntax and in
// this order: cn:, dns:, ip:, uri:, ou:, sha256:, spki:. DNS names are
// lower-cased and IPv4-mapped addresses written as IPv4, as a pattern would
// be; other values are as the certificate has them, so quote them (%q)
// before printing those of an untrusted certificate. It returns nil for a
// nil cert.
func Identities(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	ids := NameIdentities(cert)
	return append(ids, KindSHA256+":"+Fingerprint(cert), KindSPKI+":"+SPKIHash(cert))
}

// NameIdentities returns the name identities of cert (cn:, dns:, ip:, uri:,
// ou:, as Identities writes them). cert need not be signed: a template, or
// the names of a certificate request, will do.
func NameIdentities(cert *x509.Certificate) []string {
	var ids []string
	if cn := cert.Subject.CommonName; cn != "" {
		ids = append(ids, KindCN+":"+cn)
	}
	for _, name := range cert.DNSNames {
		ids = append(ids, KindDNS+":"+normalizeDNS(name))
	}
	for _, ip := range ipStrings(cert) {
		ids = append(ids, KindIP+":"+ip)
	}
	for _, u := range uriStrings(cert) {
		ids = append(ids, KindURI+":"+u)
	}
	for _, ou := range cert.Subject.OrganizationalUnit {
		ids = append(ids, KindOU+":"+ou)
	}
	return ids
}

// KeyHash returns the lower-case hex SHA-256 of pub's SubjectPublicKeyInfo,
// as written in a spki: pattern: SPKIHash for a key without its
// certificate (a request, a new key).
func KeyHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	s := sum(der)
	return hex.EncodeToString(s[:]), nil
}

// Describe returns one short line naming cert for logs and error messages:
//
//	CN="partner-b" OU="Ops" dns:a.example.com,b.example.com uri:spiffe://example.com/b sha256:9f86d081884c7d65… spki:4a1c3e0f12ab9c77…
//
// It shows at most three values of each kind and quotes any value with
// spaces, quotes or unprintable characters, so a hostile certificate cannot
// forge or flood a log line. It returns "<no certificate>" for a nil cert.
func Describe(cert *x509.Certificate) string {
	if cert == nil {
		return "<no certificate>"
	}
	var parts []string
	if cn := cert.Subject.CommonName; cn != "" {
		parts = append(parts, "CN="+strconv.Quote(truncate(cn)))
	}
	if ous := cert.Subject.OrganizationalUnit; len(ous) > 0 {
		parts = append(parts, "OU="+joinValues(ous, quoteAlways))
	}
	names := make([]string, len(cert.DNSNames))
	for i, n := range cert.DNSNames {
		names[i] = normalizeDNS(n)
	}
	parts = appendKind(parts, KindDNS, names)
	parts = appendKind(parts, KindIP, ipStrings(cert))
	parts = appendKind(parts, KindURI, uriStrings(cert))
	parts = append(parts,
		KindSHA256+":"+Fingerprint(cert)[:describeHashLen]+"…",
		KindSPKI+":"+SPKIHash(cert)[:describeHashLen]+"…")
	return strings.Join(parts, " ")
}

// appendKind appends "kind:v1,v2,v3,+N more" when values is not empty.
func appendKind(parts []string, kind string, values []string) []string {
	if len(values) == 0 {
		return parts
	}
	return append(parts, kind+":"+joinValues(values, quoteIfNeeded))
}

// joinValues joins up to describeMaxValues values, each truncated and
// quoted by quote, and says how many were left out.
func joinValues(values []string, quote func(string) string) string {
	shown := make([]string, 0, describeMaxValues+1)
	for i, v := range values {
		if i == describeMaxValues {
			shown = append(shown, fmt.Sprintf("+%d more", len(values)-i))
			break
		}
		shown = append(shown, quote(truncate(v)))
	}
	return strings.Join(shown, ",")
}

// quoteAlways quotes s as a Go string.
func quoteAlways(s string) string {
	return strconv.Quote(s)
}

// quoteIfNeeded returns s as it is when it is printable ASCII without
// spaces, quotes, backslashes or commas, and quoted otherwise.
func quoteIfNeeded(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == ',' {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

// truncate shortens s to describeMaxLen bytes, on a rune boundary, and
// marks the cut with "…".
func truncate(s string) string {
	if len(s) <= describeMaxLen {
		return s
	}
	cut := describeMaxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ipStrings returns the certificate's IP SANs, IPv4-mapped ones as IPv4.
func ipStrings(cert *x509.Certificate) []string {
	var out []string
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap().String())
		}
	}
	return out
}

// uriStrings returns the certificate's URI SANs as strings.
func uriStrings(cert *x509.Certificate) []string {
	var out []string
	for _, u := range cert.URIs {
		if u != nil {
			out = append(out, u.String())
		}
	}
	return out
}
