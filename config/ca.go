package config

import (
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CA makes this agent a registration authority for its peers: it signs
// enrollment requests (a one-time invitation from `postern pki invite`)
// and renewals sent over a live tunnel, with the `postern pki` folder in
// Dir. Nothing else in the agent reads the CA key.
type CA struct {
	Dir        string   `toml:"dir"`        // a `postern pki` folder: ca.crt, ca.key, its state and CRL
	Identities []string `toml:"identities"` // identity patterns a signed certificate may carry; empty = what each invitation grants
	Validity   Duration `toml:"validity"`   // lifetime of the certificates it signs
	KeyTypes   []string `toml:"key_types"`  // key types a request may use; empty = every type `postern pki` makes
	Renew      *bool    `toml:"renew"`      // sign renewals over live tunnels (default true)
}

// Enroll lets `postern run` enroll by itself on first start: when the
// [tls] cert is missing, the token in TokenFile is redeemed first.
type Enroll struct {
	TokenFile string `toml:"token_file"` // a file holding the token `postern pki invite` printed
}

// Defaults for [ca] and [tls] renew_before.
const (
	DefaultCADir      = "pki"
	DefaultCAValidity = 90 * 24 * time.Hour
)

func (a *CA) setDefaults() {
	if a.Dir == "" {
		a.Dir = DefaultCADir
	}
	setDur(&a.Validity, DefaultCAValidity)
	setBool(&a.Renew, true)
}

func (a *CA) resolvePaths(dir string) {
	if a.Dir != "" && !filepath.IsAbs(a.Dir) {
		a.Dir = filepath.Join(dir, a.Dir)
	}
}

func (e *Enroll) resolvePaths(dir string) {
	if e.TokenFile != "" && !filepath.IsAbs(e.TokenFile) {
		e.TokenFile = filepath.Join(dir, e.TokenFile)
	}
}

// CAKeyTypes are the key types [ca] key_types may name: the types
// `postern pki` makes (pki.KeyTypes; a test keeps the two lists equal).
var CAKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"}

// caIdentityKinds are the kinds a [ca] identities pattern may use: the
// names a certificate request asks for. A fingerprint (sha256:, spki:) is
// not known before the certificate is signed, and "*" would bound nothing.
var caIdentityKinds = []string{"dns", "ip", "uri", "cn", "ou"}

// caKeyAt is the line where key is written in [ca] (0 when unknown).
func (c *Config) caKeyAt(key string) int { return c.lines["ca"][key] }

func (c *Config) validateCA() error {
	if c.Enroll != nil && c.Enroll.TokenFile == "" {
		return c.errorf(c.lines["enroll"]["token_file"], "enroll.token_file: required in [enroll]: the file holding the token `postern pki invite` printed")
	}
	a := c.CA
	if a == nil {
		return nil
	}
	for _, e := range a.Identities {
		kind, _, _ := strings.Cut(e, ":")
		if !slices.Contains(caIdentityKinds, kind) || strings.Contains(e, caScope) {
			return c.errorf(c.caKeyAt("identities"), "ca.identities: %q: use dns:, ip:, uri:, cn: or ou: patterns, like \"dns:*.sites.example.com\" (the names a signed certificate may carry)", e)
		}
		if err := checkAllow(e); err != nil {
			return c.errorf(c.caKeyAt("identities"), "ca.identities: %q: %v", e, err)
		}
	}
	for _, k := range a.KeyTypes {
		if !slices.Contains(CAKeyTypes, strings.ToLower(k)) {
			return c.errorf(c.caKeyAt("key_types"), "ca.key_types: %q is not a key type: use some of %s", k, strings.Join(CAKeyTypes, ", "))
		}
	}
	if a.Validity < 0 || (a.Validity > 0 && time.Duration(a.Validity) < 10*time.Second) {
		return c.errorf(c.caKeyAt("validity"), "ca.validity: %s: use at least 10s (short lifetimes are for tests; like \"90d\")", time.Duration(a.Validity))
	}
	return nil
}
