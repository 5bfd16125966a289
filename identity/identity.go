// Package identity matches peer certificates against the identity patterns
// people write in a config: service `allow` lists, a reverse forward's `via`
// and a client's `peer` pins.
//
// A pattern is "kind:value" or "*" alone:
//
//	dns:partner-a.example.com     a DNS SAN, case-insensitive
//	dns:*.example.com             exactly one label in place of "*"
//	ip:192.0.2.7  ip:10.0.0.0/8   an IP SAN, or any IP SAN inside a prefix
//	uri:spiffe://example.com/b    a URI SAN, exactly
//	uri:spiffe://example.com/p/*  one last path segment in place of "*"
//	cn:Legacy Gateway             the subject CommonName, exactly
//	ou:Operations                 any subject OrganizationalUnit, exactly
//	sha256:9f86d0…                SHA-256 of the DER certificate (hex)
//	spki:4a1c…                    SHA-256 of the SubjectPublicKeyInfo (hex or base64)
//	*                             any peer that passed verification
//
// Any pattern may end with " from ca:sha256:<hex>" or " from ca:spki:<hex>"
// to say which CA must have issued the certificate (see scope.go); an
// agent that trusts more than one CA needs this on every pattern but the
// sha256: and spki: pins.
//
// Matching says only whether a certificate carries an identity; it does not
// verify the certificate. Callers match only certificates that the TLS layer
// has already verified. The package uses nothing but the standard library.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Pattern kinds, as written before the colon. KindAny is the pattern "*".
const (
	KindDNS    = "dns"
	KindIP     = "ip"
	KindURI    = "uri"
	KindCN     = "cn"
	KindOU     = "ou"
	KindSHA256 = "sha256"
	KindSPKI   = "spki"
	KindAny    = "*"
)

// kindList is what error messages offer when the kind is wrong.
const kindList = `dns, ip, uri, cn, ou, sha256, spki, or "*" alone`

// Pattern is one parsed allow entry. Kind is one of the Kind constants and
// Value is the canonical value (lower-case DNS name, normalized address or
// prefix, lower-case hex); Value is empty for KindAny.
//
// Build a Pattern with Parse: the zero Pattern matches nothing. Patterns are
// immutable values, safe for concurrent use, and comparable with ==.
type Pattern struct {
	Kind  string
	Value string
	// CA is the CA that must have issued the certificate, "sha256:<hex>" or
	// "spki:<hex>", or "" when any trusted CA may have.
	CA string

	caSPKI bool         // CA names the CA's public key, not its certificate
	caSum  [32]byte     // the hash CA names
	wild   bool         // dns "*." prefix, or uri "*" last segment
	prefix netip.Prefix // ip: a single address is a full-length prefix
	sum    [32]byte     // sha256, spki
}

// Parse parses one pattern such as "dns:partner-a.example.com", "*" or
// "dns:partner-a.example.com from ca:sha256:<hex>".
//
// The error says what is wrong and what is accepted but does not repeat s;
// wrap it with where s came from, as ParseList does.
func Parse(s string) (Pattern, error) {
	name, ref, scoped := cutScope(s)
	p, err := parseUnscoped(name)
	if err != nil || !scoped {
		return p, err
	}
	if err := p.parseScope(ref); err != nil {
		return Pattern{}, err
	}
	return p, nil
}

// parseUnscoped parses a pattern without its CA.
func parseUnscoped(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("empty pattern; want kind:value with kind %s", kindList)
	}
	if strings.TrimSpace(s) != s {
		return Pattern{}, errors.New("leading or trailing whitespace; remove it")
	}
	if s == KindAny {
		return Pattern{Kind: KindAny}, nil
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || !isKind(kind) {
		return Pattern{}, kindError(s, kind, ok)
	}
	if value == "" {
		return Pattern{}, fmt.Errorf("empty value after %q", kind+":")
	}
	return parseValue(kind, value)
}

// parseValue dispatches to the parser of a known kind.
func parseValue(kind, value string) (Pattern, error) {
	switch kind {
	case KindDNS:
		return parseDNS(value)
	case KindIP:
		return parseIP(value)
	case KindURI:
		return parseURI(value)
	case KindCN, KindOU:
		return parseName(kind, value)
	default: // KindSHA256, KindSPKI
		return parseHash(kind, value)
	}
}

// isKind reports whether kind is a kind that takes a value.
func isKind(kind string) bool {
	switch kind {
	case KindDNS, KindIP, KindURI, KindCN, KindOU, KindSHA256, KindSPKI:
		return true
	}
	return false
}

// kindError explains a missing or unknown kind, with a guess where one is
// likely: a bare name or address, an upper-case kind, a URI without "uri:".
func kindError(s, kind string, hasColon bool) error {
	if guess := guessKind(s); guess != "" {
		return fmt.Errorf("missing kind; did you mean %q? (kinds: %s)", guess+":"+s, kindList)
	}
	if !hasColon {
		return fmt.Errorf("missing kind; want kind:value with kind %s", kindList)
	}
	if isKind(strings.ToLower(kind)) {
		return fmt.Errorf("unknown kind %q; kinds are lower case: %q", kind, strings.ToLower(kind))
	}
	return fmt.Errorf("unknown kind %q; want %s", kind, kindList)
}

// guessKind returns the kind s would have made sense with, or "".
func guessKind(s string) string {
	if _, err := netip.ParseAddr(s); err == nil {
		return KindIP
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return KindIP
	}
	if _, rest, ok := strings.Cut(s, ":"); ok && strings.HasPrefix(rest, "//") {
		return KindURI
	}
	if !strings.Contains(s, ":") && strings.Contains(s, ".") && checkDNS(strings.ToLower(s)) == nil {
		return KindDNS
	}
	return ""
}

// String returns the canonical form of p, which Parse reads back as an
// equal Pattern: "dns:partner-a.example.com", "ip:10.0.0.0/8", "*".
func (p Pattern) String() string {
	switch p.Kind {
	case "":
		return ""
	case KindAny:
		if p.Scoped() {
			return KindAny + scopeSep + p.CA
		}
		return KindAny
	}
	if p.Scoped() {
		return p.Kind + ":" + p.Value + scopeSep + p.CA
	}
	return p.Kind + ":" + p.Value
}

// Match reports whether cert carries the identity p names. A nil cert
// matches nothing, not even "*". A pattern that names a CA matches nothing
// here, where the chain is unknown: use MatchVerified.
func (p Pattern) Match(cert *x509.Certificate) bool {
	if cert == nil || p.Scoped() {
		return false
	}
	switch p.Kind {
	case KindAny:
		return true
	case KindDNS:
		return p.matchDNS(cert.DNSNames)
	case KindIP:
		return p.matchIP(cert)
	case KindURI:
		return p.matchURI(cert)
	case KindCN:
		return cert.Subject.CommonName == p.Value
	case KindOU:
		return slices.Contains(cert.Subject.OrganizationalUnit, p.Value)
	case KindSHA256:
		return sum(cert.Raw) == p.sum
	case KindSPKI:
		return sum(cert.RawSubjectPublicKeyInfo) == p.sum
	}
	return false
}

// List is an allow list: a certificate is allowed when any pattern matches.
// An empty List matches nothing (default deny).
type List []Pattern

// ParseList parses allow entries. The error names the first bad entry:
//
//	allow "dsn:x": unknown kind "dsn"; want dns, ip, uri, cn, ou, sha256, spki, or "*" alone
func ParseList(entries []string) (List, error) {
	l := make(List, 0, len(entries))
	for _, e := range entries {
		p, err := Parse(e)
		if err != nil {
			return nil, fmt.Errorf("allow %q: %w", e, err)
		}
		l = append(l, p)
	}
	return l, nil
}

// Match returns the first pattern in l that matches cert, for the log line
// that says why a stream was allowed.
func (l List) Match(cert *x509.Certificate) (Pattern, bool) {
	for _, p := range l {
		if p.Match(cert) {
			return p, true
		}
	}
	return Pattern{}, false
}

// Strings returns the canonical form of every pattern in l.
func (l List) Strings() []string {
	out := make([]string, len(l))
	for i, p := range l {
		out[i] = p.String()
	}
	return out
}
