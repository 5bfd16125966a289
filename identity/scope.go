package identity

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// A pattern may name the CA that must have issued the peer's certificate:
//
//	dns:partner-a.example.com from ca:sha256:5e1f…   a name, from one CA only
//	* from ca:spki:77ab…                             any certificate of that CA
//
// The CA is named by the SHA-256 fingerprint of its certificate (sha256:)
// or of its public key (spki:, which survives re-issuing the CA certificate
// with the same key). It must be a CA certificate in one of the peer's
// verified chains: the root from the local ca bundle that anchors the
// chain, or an intermediate CA in it. A fingerprint cannot be forged, so
// a CA that the agent trusts cannot make a chain that seems to come from
// another one; a CA's name (CN) could, which is why names are not accepted.

// scopeSep separates a pattern from the CA that must have issued it. The
// suffix form reads as a sentence in a TOML list and leaves the part before
// it exactly as it was: dns:, ip:, uri:, sha256: and spki: values never
// hold a space, and a cn: or ou: value may hold anything except this
// separator.
const scopeSep = " from ca:"

// Scope kinds: how a pattern names its CA.
const caKinds = "sha256 (fingerprint of the CA certificate) or spki (hash of its public key)"

// cutScope splits "pattern from ca:ref" at the first separator.
func cutScope(s string) (pattern, ref string, scoped bool) {
	return strings.Cut(s, scopeSep)
}

// parseScope parses the CA reference after " from ca:", a sha256: or spki:
// hash, into p.
func (p *Pattern) parseScope(ref string) error {
	if ref == "" {
		return errors.New(`nothing after "from ca:"; want "from ca:sha256:<hex>" or "from ca:spki:<hex>"`)
	}
	kind, value, ok := strings.Cut(ref, ":")
	if !ok || kind != KindSHA256 && kind != KindSPKI {
		return fmt.Errorf("ca %q: name the CA by %s, as in \"from ca:sha256:<64 hex digits>\" (postern pki show CA.crt prints it)", ref, caKinds)
	}
	if value == "" {
		return fmt.Errorf("ca: empty value after %q", kind+":")
	}
	h, err := parseHash(kind, value)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	p.CA = h.String()
	p.caSPKI = kind == KindSPKI
	p.caSum = h.sum
	return nil
}

// Scoped reports whether p names the CA that must have issued the
// certificate.
func (p Pattern) Scoped() bool { return p.CA != "" }

// NeedsCA reports whether p, once an agent trusts more than one CA, must
// name the CA that issued the certificate: every pattern that matches a
// name any CA could put in a certificate (dns:, ip:, uri:, cn:, ou:, "*"),
// unless it already names one. A sha256: or spki: pin names one
// certificate or key and needs no CA.
func (p Pattern) NeedsCA() bool {
	switch p.Kind {
	case KindSHA256, KindSPKI, "":
		return false
	}
	return !p.Scoped()
}

// Unscoped returns p without its CA.
func (p Pattern) Unscoped() Pattern {
	p.CA, p.caSPKI, p.caSum = "", false, [32]byte{}
	return p
}

// WithCA returns p scoped to the CA certificate ca, by its fingerprint.
func (p Pattern) WithCA(ca *x509.Certificate) Pattern {
	p.CA = KindSHA256 + ":" + Fingerprint(ca)
	p.caSPKI = false
	p.caSum = sum(ca.Raw)
	return p
}

// MatchVerified reports whether the peer whose verified chains are given
// carries the identity p names and, when p names a CA, whether that CA is
// in one of the chains above the leaf. Every chain starts with the same
// leaf, as crypto/tls's VerifiedChains do. With no chains nothing matches.
func (p Pattern) MatchVerified(chains [][]*x509.Certificate) bool {
	if len(chains) == 0 || len(chains[0]) == 0 || !p.Unscoped().Match(chains[0][0]) {
		return false
	}
	if !p.Scoped() {
		return true
	}
	for _, chain := range chains {
		for _, c := range chain[1:] {
			if p.issuedBy(c) {
				return true
			}
		}
	}
	return false
}

// issuedBy reports whether ca is the CA p names.
func (p Pattern) issuedBy(ca *x509.Certificate) bool {
	if ca == nil || !ca.IsCA {
		return false
	}
	if p.caSPKI {
		return sum(ca.RawSubjectPublicKeyInfo) == p.caSum
	}
	return sum(ca.Raw) == p.caSum
}

// MatchVerified returns the first pattern in l that matches the peer with
// these verified chains (see Pattern.MatchVerified).
func (l List) MatchVerified(chains [][]*x509.Certificate) (Pattern, bool) {
	for _, p := range l {
		if p.MatchVerified(chains) {
			return p, true
		}
	}
	return Pattern{}, false
}

// Anchors returns the distinct CAs of a trusted bundle: each certificate
// that no other certificate in the bundle issued. A bundle of a root and an
// intermediate under it is one CA; a bundle of two partners' roots is two.
// A certificate issued by another one in the bundle counts with its issuer
// (its signature is checked, not only its issuer's name).
func Anchors(bundle []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for i, c := range bundle {
		if dup(bundle[:i], c) || issuedWithin(bundle, c) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// dup reports whether c is already in certs.
func dup(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, o := range certs {
		if bytes.Equal(o.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// issuedWithin reports whether another certificate in bundle signed c.
func issuedWithin(bundle []*x509.Certificate, c *x509.Certificate) bool {
	for _, o := range bundle {
		if bytes.Equal(o.Raw, c.Raw) || bytes.Equal(o.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) {
			continue
		}
		if bytes.Equal(c.RawIssuer, o.RawSubject) && c.CheckSignatureFrom(o) == nil {
			return true
		}
	}
	return false
}

// ErrNoCA is what ScopeError wraps: a name-based pattern that does not
// say which of several trusted CAs must have issued the certificate.
var ErrNoCA = errors.New("pattern names no CA")

// ScopeError explains a pattern that must name a CA: it lists the trusted
// CAs and the pattern as it would read scoped to each.
type ScopeError struct {
	Pattern Pattern
	CAs     []*x509.Certificate // the distinct trusted CAs (Anchors)
	Bundles string              // the ca files they come from, for the message
}

func (e *ScopeError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%q names no CA, but this agent trusts %d CAs (%s), and any of them can issue a certificate with that name; write it as one of:",
		e.Pattern.String(), len(e.CAs), e.Bundles)
	for _, ca := range e.CAs {
		if !ca.IsCA {
			// A self-signed peer certificate in the bundle issues nothing:
			// its peer is allowed by pinning it.
			fmt.Fprintf(&sb, " %q (%s, a peer certificate, not a CA: pin it);", KindSHA256+":"+Fingerprint(ca), caName(ca))
			continue
		}
		fmt.Fprintf(&sb, " %q (%s);", e.Pattern.WithCA(ca).String(), caName(ca))
	}
	return strings.TrimSuffix(sb.String(), ";")
}

func (e *ScopeError) Unwrap() error { return ErrNoCA }

// caName names a CA for the message: CN="..." or its whole subject.
func caName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("CN=%q", c.Subject.CommonName)
	}
	return fmt.Sprintf("subject %q", c.Subject.String())
}

// CheckScope returns a *ScopeError when p must name one of several trusted
// CAs and does not. anchors are the distinct CAs (Anchors) the pattern is
// matched under; bundles names their files.
func CheckScope(p Pattern, anchors []*x509.Certificate, bundles string) error {
	if len(anchors) < 2 || !p.NeedsCA() {
		return nil
	}
	return &ScopeError{Pattern: p, CAs: anchors, Bundles: bundles}
}
