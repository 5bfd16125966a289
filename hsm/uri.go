// Package hsm reads private keys and certificates from PKCS#11 tokens (HSMs,
// smart cards, SoftHSM) named by RFC 7512 URIs, and makes keys inside them.
// The URI syntax is checked in every build; the token code needs cgo, and a
// build without it says so when a token is used.
package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Scheme starts every key or cert value that names a token object.
const Scheme = "pkcs11:"

// IsURI says whether a cert or key value names a token object rather than a
// file.
func IsURI(s string) bool {
	return len(s) >= len(Scheme) && strings.EqualFold(s[:len(Scheme)], Scheme)
}

// URI is a parsed PKCS#11 URI: which module, which token, which object and
// where the PIN comes from.
type URI struct {
	Token      string // token label (token=)
	Serial     string // token serial number (serial=)
	Slot       *uint  // slot-id=
	Object     string // object label (object=)
	ID         []byte // object id (id=), raw bytes
	Type       string // type=: "", "private" or "cert"
	ModulePath string // module-path=: the PKCS#11 library
	PINSource  string // pin-source=: a file holding the PIN
	PINValue   string // pin-value=: the PIN itself (refused in configs)
}

// pathAttrs and queryAttrs are the attributes Postern understands; any
// other (except vendor x- attributes) is an error, so that typos are seen.
var pathAttrs = map[string]bool{
	"token": true, "serial": true, "slot-id": true, "object": true, "id": true, "type": true,
	"manufacturer": true, "model": true, "library-manufacturer": true,
	"library-description": true, "library-version": true, "slot-description": true, "slot-manufacturer": true,
}

var queryAttrs = map[string]bool{"module-path": true, "pin-source": true, "pin-value": true, "module-name": true}

// ParseURI parses a PKCS#11 URI (RFC 7512). It needs a module-path, a token
// (token, serial or slot-id) and an object (object or id).
func ParseURI(s string) (*URI, error) {
	if !IsURI(s) {
		return nil, fmt.Errorf("%q does not start with %s", Redact(s), Scheme)
	}
	u := &URI{}
	path, query, _ := strings.Cut(s[len(Scheme):], "?")
	seen := map[string]bool{}
	set := func(kind string, known map[string]bool, attr string) error {
		if attr == "" {
			return nil
		}
		name, raw, ok := strings.Cut(attr, "=")
		if !ok {
			return fmt.Errorf("%s attribute %q has no value: write name=value", kind, name)
		}
		name = strings.ToLower(name)
		if !known[name] && !strings.HasPrefix(name, "x-") {
			return fmt.Errorf("unknown %s attribute %q", kind, name)
		}
		if seen[name] {
			return fmt.Errorf("attribute %q given twice", name)
		}
		seen[name] = true
		v, err := url.PathUnescape(raw)
		if err != nil {
			return fmt.Errorf("attribute %q: bad percent-encoding: %w", name, err)
		}
		switch name {
		case "token":
			u.Token = v
		case "serial":
			u.Serial = v
		case "slot-id":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return fmt.Errorf("slot-id %q is not a decimal number", v)
			}
			slot := uint(n)
			u.Slot = &slot
		case "object":
			u.Object = v
		case "id":
			u.ID = []byte(v)
		case "type":
			if v != "private" && v != "cert" {
				return fmt.Errorf("type=%s: Postern reads only type=private (keys) and type=cert", v)
			}
			u.Type = v
		case "module-path":
			u.ModulePath = v
		case "pin-source":
			// file:/etc/x, file:///etc/x or a bare path
			u.PINSource = strings.TrimPrefix(strings.TrimPrefix(v, "file:"), "//")
		case "pin-value":
			u.PINValue = v
		}
		return nil
	}
	for _, a := range strings.Split(path, ";") {
		if err := set("path", pathAttrs, a); err != nil {
			return nil, err
		}
	}
	if query != "" {
		for _, a := range strings.Split(query, "&") {
			if err := set("query", queryAttrs, a); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case u.ModulePath == "":
		return nil, errors.New("no module-path: add ?module-path=/path/to/the/pkcs11/library.so")
	case !filepath.IsAbs(u.ModulePath):
		return nil, fmt.Errorf("module-path %q is not an absolute path", u.ModulePath)
	case u.Token == "" && u.Serial == "" && u.Slot == nil:
		return nil, errors.New("no token: add token=LABEL (or serial= or slot-id=)")
	case u.Object == "" && len(u.ID) == 0:
		return nil, errors.New("no object: add object=LABEL (or id=)")
	case u.PINSource != "" && u.PINValue != "":
		return nil, errors.New("both pin-source and pin-value: keep pin-source")
	case u.PINSource != "" && !filepath.IsAbs(u.PINSource):
		return nil, fmt.Errorf("pin-source %q is not an absolute path: write pin-source=file:/etc/postern/token.pin", u.PINSource)
	}
	return u, nil
}

// String is the URI without its query (module path and PIN): enough to say
// which token object is meant, safe to log.
func (u *URI) String() string {
	var parts []string
	add := func(name, v string) {
		if v != "" {
			parts = append(parts, name+"="+escape(v))
		}
	}
	add("token", u.Token)
	add("serial", u.Serial)
	if u.Slot != nil {
		add("slot-id", strconv.FormatUint(uint64(*u.Slot), 10))
	}
	add("object", u.Object)
	add("id", string(u.ID))
	add("type", u.Type)
	return Scheme + strings.Join(parts, ";")
}

// TokenName says which token is meant, for messages: `token "postern"`.
func (u *URI) TokenName() string {
	switch {
	case u.Token != "":
		return fmt.Sprintf("token %q", u.Token)
	case u.Serial != "":
		return fmt.Sprintf("token with serial %q", u.Serial)
	}
	return fmt.Sprintf("token in slot %d", *u.Slot)
}

// ObjectName says which object is meant, for messages: `label "site-a"`.
func (u *URI) ObjectName() string {
	if u.Object != "" {
		return fmt.Sprintf("label %q", u.Object)
	}
	return fmt.Sprintf("id %x", u.ID)
}

// PIN reads the PIN: pin-value, or the first line of the pin-source file.
// Without either the PIN is empty (tokens that need no login).
func (u *URI) PIN() (string, error) {
	if u.PINSource == "" {
		return u.PINValue, nil
	}
	data, err := os.ReadFile(u.PINSource)
	if err != nil {
		return "", fmt.Errorf("pin-source: %w", err)
	}
	pin, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSuffix(pin, "\r"), nil
}

// Redact is s with any pin-value replaced by xxxxx, for messages.
func Redact(s string) string {
	return pinValue.ReplaceAllString(s, "pin-value=xxxxx")
}

var pinValue = regexp.MustCompile(`(?i)pin-value=[^&;]*`)

// escape percent-encodes what cannot stand in a URI path attribute.
func escape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
