package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"net/netip"
	"strings"
)

// matchDNS reports whether one of the DNS SANs matches p. A wildcard
// pattern stands for exactly one label; a wildcard SAN matches only the
// same wildcard pattern, never a plain name.
func (p Pattern) matchDNS(sans []string) bool {
	for _, san := range sans {
		san = normalizeDNS(san)
		if san == p.Value || p.wild && oneLabelUnder(san, p.Value[1:]) {
			return true
		}
	}
	return false
}

// oneLabelUnder reports whether name is one non-wildcard label followed by
// suffix, which starts with a dot.
func oneLabelUnder(name, suffix string) bool {
	label, ok := strings.CutSuffix(name, suffix)
	return ok && label != "" && !strings.ContainsAny(label, ".*")
}

// normalizeDNS lower-cases an ASCII name and drops one trailing dot.
func normalizeDNS(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// matchIP reports whether one of the IP SANs lies in p's prefix. IPv4 SANs
// are compared as IPv4 and, for IPv6 prefixes, in their IPv4-mapped form.
func (p Pattern) matchIP(cert *x509.Certificate) bool {
	for _, ip := range cert.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if p.prefix.Contains(a) || a.Is4() && p.prefix.Contains(netip.AddrFrom16(a.As16())) {
			return true
		}
	}
	return false
}

// matchURI reports whether one of the URI SANs equals p or, for a wildcard
// pattern, has one more non-empty path segment in place of the "*".
func (p Pattern) matchURI(cert *x509.Certificate) bool {
	base := strings.TrimSuffix(p.Value, "*")
	for _, u := range cert.URIs {
		if u == nil {
			continue
		}
		s := u.String()
		if s == p.Value || p.wild && oneSegmentUnder(s, base) {
			return true
		}
	}
	return false
}

// oneSegmentUnder reports whether uri is base, which ends with '/', followed
// by one path segment other than "", "." and "..", and nothing else.
func oneSegmentUnder(uri, base string) bool {
	seg, ok := strings.CutPrefix(uri, base)
	return ok && seg != "" && seg != "." && seg != ".." && !strings.ContainsAny(seg, "/?#")
}

// sum is the SHA-256 of b.
func sum(b []byte) [32]byte {
	return sha256.Sum256(b)
}
