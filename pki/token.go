package pki

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// TokenPrefix starts every enrollment token; the digit is the token
// format's version.
const TokenPrefix = "postern-invite-1."

// Token bounds: what ParseToken accepts at most.
const (
	MaxTokenLen        = 2048 // characters, prefix included
	MaxTokenIdentities = 16
	maxTokenField      = 255 // bytes of the hub address or of one identity
)

// A Token is what `postern pki invite` prints and `postern enroll` redeems:
// where the hub is, which CA the hub's certificate must chain to, which
// invitation it redeems, and the secret that proves the holder was given
// it. Identities and Expires repeat the invitation for the site's benefit
// (the CSR it makes asks for them); the hub decides by its own record.
//
// Encoded, a token is TokenPrefix followed by base64url (no padding) of:
//
//	CA [32] | ID [16] | Secret [32] | Expires (int64 Unix seconds, big endian) |
//	len u8 | Hub | count u8 | count × (len u8 | identity)
type Token struct {
	Hub        string   // host:port of the hub's [[server]] listener
	CA         [32]byte // SHA-256 of the signing CA certificate (DER)
	ID         [16]byte // the invitation, a file name in the CA folder
	Secret     [32]byte // only its SHA-256 is kept by the CA
	Expires    time.Time
	Identities []string // "cn:…", "dns:…", "ip:…", "uri:…" the invitation grants
}

// IDString is the invitation id as the CA folder and the logs write it.
func (t Token) IDString() string { return hex.EncodeToString(t.ID[:]) }

// String encodes t. A token that came from ParseToken encodes back to the
// same text.
func (t Token) String() string {
	b := make([]byte, 0, 96+len(t.Hub)+64)
	b = append(b, t.CA[:]...)
	b = append(b, t.ID[:]...)
	b = append(b, t.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Expires.Unix()))
	b = append(b, byte(len(t.Hub)))
	b = append(b, t.Hub...)
	b = append(b, byte(len(t.Identities)))
	for _, id := range t.Identities {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ErrTokenMalformed is wrapped by every ParseToken error.
var ErrTokenMalformed = errors.New("malformed enrollment token")

// ParseToken reads a token as String writes it; spaces and line ends
// around it are ignored (a token file may end with a newline).
func ParseToken(s string) (Token, error) {
	bad := func(why string) (Token, error) {
		return Token{}, fmt.Errorf("%w: %s (copy the whole line `postern pki invite` printed, starting %q)", ErrTokenMalformed, why, TokenPrefix)
	}
	s = strings.TrimSpace(s)
	if len(s) > MaxTokenLen {
		return bad(fmt.Sprintf("%d characters, more than %d", len(s), MaxTokenLen))
	}
	body, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		if strings.HasPrefix(s, "postern-invite-") {
			return bad("a token format this version does not read")
		}
		return bad("it does not start with " + TokenPrefix)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return bad("not base64url: cut or altered")
	}
	var t Token
	r := tokenReader{b: b}
	r.fixed(t.CA[:])
	r.fixed(t.ID[:])
	r.fixed(t.Secret[:])
	exp := int64(r.u64())
	t.Hub = r.field()
	n := int(r.byte())
	if r.short {
		return bad("cut short")
	}
	if n > MaxTokenIdentities {
		return bad(fmt.Sprintf("%d identities, more than %d", n, MaxTokenIdentities))
	}
	for range n {
		t.Identities = append(t.Identities, r.field())
	}
	switch {
	case r.short:
		return bad("cut short")
	case len(r.b) > 0:
		return bad(fmt.Sprintf("%d bytes after its end", len(r.b)))
	case exp <= 0:
		return bad("no expiry")
	}
	t.Expires = time.Unix(exp, 0).UTC()
	if err := checkHubAddress(t.Hub); err != nil {
		return bad(err.Error())
	}
	if len(t.Identities) > 0 {
		if _, err := NamesFromIdentities(t.Identities); err != nil {
			return bad(err.Error())
		}
	}
	return t, nil
}

// checkHubAddress accepts host:port with a port from 1 to 65535.
func checkHubAddress(hub string) error {
	host, port, err := net.SplitHostPort(hub)
	if err != nil || host == "" || !isPrintableASCII(hub) {
		return fmt.Errorf("hub address %q is not host:port", hub)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 || strconv.FormatUint(p, 10) != port {
		return fmt.Errorf("hub address %q: port %q is not a number from 1 to 65535", hub, port)
	}
	return nil
}

// tokenReader takes fields off a decoded token; short records running out.
type tokenReader struct {
	b     []byte
	short bool
}

func (r *tokenReader) take(n int) []byte {
	if r.short || len(r.b) < n {
		r.short = true
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *tokenReader) fixed(dst []byte) { copy(dst, r.take(len(dst))) }
func (r *tokenReader) u64() uint64      { return binary.BigEndian.Uint64(r.take(8)) }
func (r *tokenReader) byte() byte       { return r.take(1)[0] }
func (r *tokenReader) field() string    { return string(r.take(int(r.byte()))) }
