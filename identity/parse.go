package identity

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// parseDNS parses the value of a dns: pattern: a host name, optionally
// with "*." as its whole first label. It is stored in lower case without a
// trailing dot.
func parseDNS(value string) (Pattern, error) {
	if err := checkPlain(value); err != nil {
		return Pattern{}, fmt.Errorf("dns name: %w", err)
	}
	name := strings.TrimSuffix(strings.ToLower(value), ".")
	if _, err := netip.ParseAddr(name); err == nil {
		return Pattern{}, fmt.Errorf("dns name: %s is an IP address; use %q", value, "ip:"+name)
	}
	rest, wild := strings.CutPrefix(name, "*.")
	if err := checkDNS(rest); err != nil {
		return Pattern{}, fmt.Errorf("dns name: %w", err)
	}
	return Pattern{Kind: KindDNS, Value: name, wild: wild}, nil
}

// checkDNS reports what is wrong with a lower-case host name, if anything.
// Labels are letters, digits, '-' and '_' (seen in internal names), 1-63
// bytes, and do not start or end with '-'.
func checkDNS(name string) error {
	if len(name) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(label); err != nil {
			return err
		}
	}
	return nil
}

// checkLabel reports what is wrong with one label of a host name.
func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("empty label (leading dot or two dots in a row)")
	case len(label) > 63:
		return fmt.Errorf("label %q is longer than 63 characters", label)
	case strings.Contains(label, "*"):
		return errors.New(`"*" is allowed only as the whole first label, as in *.example.com`)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("label %q starts or ends with '-'", label)
	}
	for _, c := range []byte(label) {
		if !isLabelByte(c) {
			return fmt.Errorf("%q is not allowed in a name; use letters, digits, '-' and '_'", c)
		}
	}
	return nil
}

// isLabelByte reports whether c may appear in a lower-case host name label.
func isLabelByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// checkPlain rejects whitespace and non-ASCII in values that have neither:
// DNS names, addresses, URIs and hashes.
func checkPlain(value string) error {
	for _, r := range value {
		switch {
		case unicode.IsSpace(r):
			return errors.New("contains whitespace")
		case r == utf8.RuneError:
			return errors.New("not valid UTF-8")
		case r > unicode.MaxASCII:
			return fmt.Errorf("non-ASCII character %q; write it in ASCII form (xn-- names, percent-encoding)", r)
		case unicode.IsControl(r):
			return fmt.Errorf("control character %q", r)
		}
	}
	return nil
}

// parseIP parses the value of an ip: pattern: an address or a prefix. An
// IPv4-mapped IPv6 address is stored as plain IPv4.
func parseIP(value string) (Pattern, error) {
	if err := checkPlain(value); err != nil {
		return Pattern{}, fmt.Errorf("ip address: %w", err)
	}
	addrPart, bitsPart, isPrefix := strings.Cut(value, "/")
	a, err := parseAddr(addrPart)
	if err != nil {
		return Pattern{}, fmt.Errorf("ip address: %w", err)
	}
	if !isPrefix {
		a = a.Unmap()
		return Pattern{Kind: KindIP, Value: a.String(), prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	pfx, err := parsePrefix(a, bitsPart)
	if err != nil {
		return Pattern{}, fmt.Errorf("ip prefix: %w", err)
	}
	return Pattern{Kind: KindIP, Value: prefixString(pfx), prefix: pfx}, nil
}

// parseAddr parses an IPv4 or IPv6 address without a zone.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 or IPv6 address; want 192.0.2.7, 2001:db8::7 or a prefix such as 10.0.0.0/8", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone; zones are not allowed", s)
	}
	return a, nil
}

// parsePrefix builds the prefix a/bits. It refuses host bits, which would
// suggest a typo, and turns an IPv4-mapped prefix into plain IPv4.
func parsePrefix(a netip.Addr, bits string) (netip.Prefix, error) {
	n, err := strconv.Atoi(bits)
	if err != nil || strconv.Itoa(n) != bits || n < 0 || n > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix length %q: want 0-%d", bits, a.BitLen())
	}
	if a.Is4In6() && n >= 96 {
		a, n = a.Unmap(), n-96
	}
	pfx := netip.PrefixFrom(a, n)
	if masked := pfx.Masked(); masked != pfx {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set; did you mean %s?", pfx, masked)
	}
	return pfx, nil
}

// prefixString writes a full-length prefix as a plain address.
func prefixString(pfx netip.Prefix) string {
	if pfx.IsSingleIP() {
		return pfx.Addr().String()
	}
	return pfx.String()
}

// parseURI parses the value of a uri: pattern: an absolute URI, matched
// exactly, whose last path segment may be "*".
func parseURI(value string) (Pattern, error) {
	if err := checkPlain(value); err != nil {
		return Pattern{}, fmt.Errorf("uri: %w", err)
	}
	u, err := url.Parse(value)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return Pattern{}, fmt.Errorf("uri: %w", err)
	}
	if u.Scheme == "" {
		return Pattern{}, errors.New("uri: no scheme; want an absolute URI such as spiffe://example.com/partner")
	}
	wild := strings.Contains(value, "*")
	if wild && !validWildcardURI(value) {
		return Pattern{}, errors.New(`uri: "*" is allowed only as the whole last path segment, as in spiffe://example.com/partner/*`)
	}
	return Pattern{Kind: KindURI, Value: value, wild: wild}, nil
}

// validWildcardURI reports whether the only "*" in value is its whole last
// path segment, with no query or fragment.
func validWildcardURI(value string) bool {
	base, ok := strings.CutSuffix(value, "/*")
	if !ok || strings.ContainsAny(base, "*?#") {
		return false
	}
	u, err := url.Parse(base + "/")
	return err == nil && u.Opaque == "" && strings.HasSuffix(u.Path, "/")
}

// parseName parses the value of a cn: or ou: pattern: any text without
// control characters or surrounding whitespace, matched exactly.
func parseName(kind, value string) (Pattern, error) {
	if strings.TrimSpace(value) != value {
		return Pattern{}, fmt.Errorf("%s: leading or trailing whitespace; remove it", kind)
	}
	if !utf8.ValidString(value) {
		return Pattern{}, fmt.Errorf("%s: not valid UTF-8", kind)
	}
	for _, r := range value {
		if unicode.IsControl(r) {
			return Pattern{}, fmt.Errorf("%s: control character %q", kind, r)
		}
	}
	return Pattern{Kind: kind, Value: value}, nil
}

// parseHash parses the value of a sha256: or spki: pattern: 64 hex digits
// in either case, optionally separated by ':'. spki: also takes the 44
// characters of standard base64 used by HPKP-style pins.
func parseHash(kind, value string) (Pattern, error) {
	what, want := "sha256 fingerprint", "want 64 (SHA-256 of the certificate; ':' separators allowed)"
	if kind == KindSPKI {
		what, want = "spki hash", "want 64, or 44 characters of base64 (SHA-256 of the public key)"
	}
	if err := checkPlain(value); err != nil {
		return Pattern{}, fmt.Errorf("%s: %w", what, err)
	}
	b, err := decodeHash(kind, value, want)
	if err != nil {
		return Pattern{}, fmt.Errorf("%s: %w", what, err)
	}
	p := Pattern{Kind: kind, Value: hex.EncodeToString(b)}
	copy(p.sum[:], b)
	return p, nil
}

// decodeHash decodes 32 bytes written as hex with optional ':' separators,
// or for spki: as a 44-character base64 pin. want completes the message
// for a wrong number of digits.
func decodeHash(kind, value, want string) ([]byte, error) {
	if kind == KindSPKI && len(value) == 44 && strings.HasSuffix(value, "=") {
		b, err := base64.StdEncoding.Strict().DecodeString(value)
		if err != nil || len(b) != 32 {
			return nil, errors.New("not valid base64 of 32 bytes")
		}
		return b, nil
	}
	digits := strings.ReplaceAll(value, ":", "")
	if i := strings.IndexFunc(digits, func(r rune) bool { return !isHex(r) }); i >= 0 {
		return nil, fmt.Errorf("%q is not a hex digit", digits[i])
	}
	if len(digits) != 64 {
		return nil, fmt.Errorf("got %d hex digits, %s", len(digits), want)
	}
	return hex.DecodeString(digits)
}

// isHex reports whether r is a hex digit in either case.
func isHex(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F'
}
