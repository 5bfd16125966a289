package config

import (
	"path/filepath"
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
