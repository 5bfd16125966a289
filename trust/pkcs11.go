package trust

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/postern-tunnel/postern/hsm"
)

// A cert or key value starting with pkcs11: names an object in a PKCS#11
// token (see package hsm) instead of a file. For a key, the URI itself is
// the "content" that reload hashes: the key is found again in the token
// whenever the URI or the certificate changes. A certificate in a token is
// read from it at every reload, so replacing it there rotates it.

// readCert reads the certificate chain: the file, or the certificate in a
// token as PEM.
func readCert(path string) ([]byte, error) {
	if !hsm.IsURI(path) {
		return os.ReadFile(path)
	}
	u, err := hsm.ParseURI(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hsm.Redact(path), err)
	}
	c, err := hsm.Certificate(u)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), nil
}

// readKey reads the key file; for a key in a token it returns the URI.
func readKey(path string) ([]byte, error) {
	if hsm.IsURI(path) {
		return []byte(path), nil
	}
	return os.ReadFile(path)
}

// tokenKeyPair pairs the certificate chain in certPEM with the private key
// in the token f.Key names, and checks that they belong together.
func tokenKeyPair(f Files, certPEM []byte) (tls.Certificate, *x509.Certificate, error) {
	u, err := hsm.ParseURI(f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key %s: %w", hsm.Redact(f.Key), err)
	}
	var cert tls.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, nil, fmt.Errorf("cert %s: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)", objectName(f.Cert))
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("cert %s: %w", objectName(f.Cert), err)
	}
	key, err := hsm.Open(u)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key %s: %w", u, err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, nil, fmt.Errorf("key %s (token %q) does not match certificate %s: use the key the certificate was issued for", u, key.Token, objectName(f.Cert))
	}
	cert.PrivateKey = key.Signer
	cert.Leaf = leaf
	return cert, leaf, nil
}

// pinProblem is KeyPermissionProblem for the PIN file of a key in a token.
func pinProblem(key string) (file, problem string) {
	u, err := hsm.ParseURI(key)
	if err != nil || u.PINSource == "" {
		return "", ""
	}
	return u.PINSource, KeyPermissionProblem(u.PINSource)
}

// objectName is a cert or key value for messages: the path, or the URI
// without its query (module path and PIN).
func objectName(v string) string {
	if !hsm.IsURI(v) {
		return v
	}
	if u, err := hsm.ParseURI(v); err == nil {
		return u.String()
	}
	return hsm.Redact(v)
}
