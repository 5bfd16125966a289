//go:build !cgo

package hsm

import (
	"crypto"
	"crypto/x509"
	"errors"
)

// Supported is false: this build has no cgo, so it cannot load PKCS#11
// modules.
const Supported = false

// ErrNoCgo is what every token operation returns in a build without cgo.
var ErrNoCgo = errors.New("PKCS#11 needs a build with cgo: this postern was built with CGO_ENABLED=0; build it with CGO_ENABLED=1 (make build) to use keys in a token")

// Key is a private key in a token.
type Key struct {
	crypto.Signer
	Token string
	Slot  uint
}

// Open fails: see ErrNoCgo.
func Open(u *URI) (*Key, error) { return nil, ErrNoCgo }

// Certificate fails: see ErrNoCgo.
func Certificate(u *URI) (*x509.Certificate, error) { return nil, ErrNoCgo }

// ImportCertificate fails: see ErrNoCgo.
func ImportCertificate(u *URI, cert *x509.Certificate) error { return ErrNoCgo }

// Generate fails: see ErrNoCgo.
func Generate(u *URI, kind string) (*Key, error) { return nil, ErrNoCgo }

// CloseAll does nothing.
func CloseAll() {}
