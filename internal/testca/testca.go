// Package testca makes throwaway certificate authorities and certificates
// in memory for tests: a fresh CA per test, certificates with any names,
// key type and validity, written to files when a config needs paths.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that lives for one test.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// New makes a CA named cn.
func New(t testing.TB, cn string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// KeyType selects the key algorithm and PEM encoding of an issued key.
type KeyType int

const (
	ECDSA      KeyType = iota // P-256, SEC1 "EC PRIVATE KEY"
	ECDSAPKCS8                // P-256, PKCS#8
	RSA                       // 2048, PKCS#1 "RSA PRIVATE KEY"
	RSAPKCS8                  // 2048, PKCS#8
	Ed25519                   // PKCS#8
)

// Options describe a certificate to issue. Zero values give a certificate
// valid for both client and server use from an hour ago to a day from now.
type Options struct {
	CN        string
	DNS       []string
	IPs       []string
	URIs      []string
	OU        []string
	NotBefore time.Time
	NotAfter  time.Time
	Usage     []x509.ExtKeyUsage
	KeyType   KeyType
	Key       crypto.Signer // reuse a key (rotation with the same key, or a key in a token: KeyPEM is then nil)
}

// Leaf is an issued certificate and its key.
type Leaf struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a new certificate.
func (ca *CA) Issue(t testing.TB, o Options) *Leaf {
	t.Helper()
	key, keyPEM := o.Key, []byte(nil)
	if key == nil {
		key, keyPEM = newKey(t, o.KeyType)
	} else {
		keyPEM = encodeKey(t, key, o.KeyType)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if o.Usage == nil {
		o.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: o.CN, OrganizationalUnit: o.OU},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  o.Usage,
		DNSNames:     o.DNS,
	}
	if o.KeyType == RSA || o.KeyType == RSAPKCS8 {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, ip := range o.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, u := range o.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &Leaf{Cert: cert, Key: key, KeyPEM: keyPEM,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Files are the paths of a leaf written to disk.
type Files struct{ Cert, Key, CA string }

// Write puts the leaf's certificate and key, and ca's bundle, in dir as
// NAME.crt, NAME.key and NAME-ca.crt.
func (l *Leaf) Write(t testing.TB, dir, name string, ca *CA) Files {
	t.Helper()
	f := Files{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		CA:   filepath.Join(dir, name+"-ca.crt"),
	}
	WriteFile(t, f.Cert, l.CertPEM)
	WriteFile(t, f.Key, l.KeyPEM)
	WriteFile(t, f.CA, ca.PEM)
	return f
}

// WriteFile writes data with private permissions, failing the test on error.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB, kt KeyType) (crypto.Signer, []byte) {
	var key crypto.Signer
	var err error
	switch kt {
	case RSA, RSAPKCS8:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key, encodeKey(t, key, kt)
}

func encodeKey(t testing.TB, key crypto.Signer, kt KeyType) []byte {
	var block *pem.Block
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if kt == ECDSA {
			der, err := x509.MarshalECPrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
		}
	case *rsa.PrivateKey:
		if kt == RSA {
			block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	}
	if block == nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			switch key.(type) {
			case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
				t.Fatal(err)
			}
			return nil // a key in a token: it has no PEM form
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(block)
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
