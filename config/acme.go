package config

import (
	"net/url"
	"path/filepath"
	"strings"
)

// ACME obtains and renews the certificate of the [[server]]s from an ACME
// CA (public or internal). The certificate and its key are written into
// Dir as cert.pem and key.pem; a [[server]] uses them by naming those
// paths as its cert and key, so the usual reload swaps each renewal in.
// The http-01 challenge is answered on HTTPListen.
type ACME struct {
	Directory   string   `toml:"directory"`    // the CA's directory URL (https://)
	Domains     []string `toml:"domains"`      // DNS names the certificate carries
	Email       string   `toml:"email"`        // account contact, optional
	Dir         string   `toml:"dir"`          // state: account key, certificate, key
	CARoots     string   `toml:"ca_roots"`     // PEM roots for the ACME server's HTTPS; "" = system roots
	RenewBefore Duration `toml:"renew_before"` // renew this long before expiry; 0 = a third of the lifetime
	HTTPListen  Address  `toml:"http_listen"`  // http-01 challenge listener, port 80 of the domains
}

// DefaultACMEDir is [acme] dir when unset, relative to the config file.
const DefaultACMEDir = "acme"

// CertPath is the certificate chain [acme] writes.
func (a *ACME) CertPath() string { return filepath.Join(a.Dir, "cert.pem") }

// KeyPath is the private key [acme] writes.
func (a *ACME) KeyPath() string { return filepath.Join(a.Dir, "key.pem") }

// AccountKeyPath is the ACME account's private key.
func (a *ACME) AccountKeyPath() string { return filepath.Join(a.Dir, "account.key") }

func (a *ACME) setDefaults() {
	if a.Dir == "" {
		a.Dir = DefaultACMEDir
	}
}

func (a *ACME) resolvePaths(dir string) {
	for _, p := range []*string{&a.Dir, &a.CARoots} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

func (c *Config) validateACME() error {
	a := c.ACME
	if a == nil {
		return nil
	}
	u, err := url.Parse(a.Directory)
	switch {
	case a.Directory == "":
		return c.errorf(0, "acme.directory: required: the ACME CA's directory URL, like \"https://acme-v02.api.letsencrypt.org/directory\"")
	case err != nil || u.Scheme != "https" || u.Host == "":
		return c.errorf(0, "acme.directory: %q is not an https:// URL", a.Directory)
	case len(a.Domains) == 0:
		return c.errorf(0, "acme.domains: required: the DNS names the hub's certificate must carry (the sites' server_name)")
	case a.HTTPListen == "":
		return c.errorf(0, "acme.http_listen: required: where the http-01 challenge is answered, like \"0.0.0.0:80\" (the CA connects to port 80 of each domain)")
	}
	for _, d := range a.Domains {
		if d == "" || strings.ContainsAny(d, " /:@") || strings.HasSuffix(d, ".") {
			return c.errorf(0, "acme.domains: %q is not a DNS name", d)
		}
	}
	for _, s := range c.Servers {
		if s.Cert == a.CertPath() && s.Key == a.KeyPath() {
			return nil
		}
	}
	return c.errorf(0, "acme: no [[server]] uses the certificate it obtains: set cert = %q and key = %q in [tls] or in the [[server]]", a.CertPath(), a.KeyPath())
}
