package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// Files names the certificate material of one tunnel endpoint.
type Files struct {
	Cert       string // PEM chain, leaf first
	Key        string // PEM private key: PKCS#1, PKCS#8 or SEC1
	CA         string // PEM bundle trusted to sign peer certificates
	MinVersion string // "1.3" or "1.2"
}

// Material is loaded, checked certificate material. It is immutable; a
// reload makes a new one.
type Material struct {
	Cert       tls.Certificate
	Leaf       *x509.Certificate
	Roots      *x509.CertPool
	CASubjects []string // trusted CA subjects, for error messages
	MinVersion uint16
}

// LoadMaterial reads and checks the files: the key must match the
// certificate, and the CA bundle must hold at least one certificate.
func LoadMaterial(f Files) (*Material, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, explainKeyPair(f, err)
	}
	m := &Material{Cert: cert, Leaf: cert.Leaf}
	if m.Leaf == nil {
		if m.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert %s: %w", f.Cert, err)
		}
	}
	if m.Roots, m.CASubjects, err = LoadCAs(f.CA); err != nil {
		return nil, err
	}
	switch f.MinVersion {
	case "", "1.3":
		m.MinVersion = tls.VersionTLS13
	case "1.2":
		m.MinVersion = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("min_version %q: use \"1.3\" or \"1.2\"", f.MinVersion)
	}
	return m, nil
}

func explainKeyPair(f Files, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "private key does not match public key"):
		return fmt.Errorf("key %s does not match certificate %s: use the key the certificate was issued for", f.Key, f.Cert)
	case strings.Contains(msg, "failed to find any PEM data in certificate"):
		return fmt.Errorf("cert %s: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)", f.Cert)
	case strings.Contains(msg, "failed to find any PEM data in key"), strings.Contains(msg, "failed to find PEM block with type ending in \"PRIVATE KEY\""):
		return fmt.Errorf("key %s: no PEM private key found (expected -----BEGIN ... PRIVATE KEY-----)", f.Key)
	}
	return fmt.Errorf("cert %s / key %s: %w", f.Cert, f.Key, err)
}

// LoadCAs reads a PEM bundle of trusted certificates.
func LoadCAs(path string) (*x509.CertPool, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	var subjects []string
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("ca %s: %w", path, err)
		}
		pool.AddCert(c)
		subjects = append(subjects, Subject(c))
	}
	if len(subjects) == 0 {
		return nil, nil, fmt.Errorf("ca %s: no PEM certificates found", path)
	}
	return pool, subjects, nil
}

// Subject names a certificate for people: its CN, or the whole subject.
func Subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("CN=%q", c.Subject.CommonName)
	}
	if s := c.Subject.String(); s != "" {
		return s
	}
	if len(c.DNSNames) > 0 {
		return "DNS:" + c.DNSNames[0]
	}
	return "(empty subject)"
}

// Credentials hold the current Material of one endpoint. Handshakes read it
// once each; Store swaps it for later handshakes without touching live
// tunnels.
type Credentials struct {
	cur atomic.Pointer[Material]
}

// NewCredentials holds m.
func NewCredentials(m *Material) *Credentials {
	c := &Credentials{}
	c.cur.Store(m)
	return c
}

// Load returns the current material.
func (c *Credentials) Load() *Material { return c.cur.Load() }

// Store replaces the material for new handshakes.
func (c *Credentials) Store(m *Material) { c.cur.Store(m) }

func baseConfig(m *Material) *tls.Config {
	return &tls.Config{
		MinVersion:                  m.MinVersion,
		Certificates:                []tls.Certificate{m.Cert},
		NextProtos:                  []string{ALPN},
		DynamicRecordSizingDisabled: true, // bulk tunnels want full records at once
	}
}

// ServerConfig is the TLS configuration for accepting tunnels: a client
// certificate is required and verified against the current CA bundle.
func ServerConfig(creds *Credentials) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{ALPN},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := creds.Load()
			cfg := baseConfig(m)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = m.Roots
			return cfg, nil
		},
	}
}

// ClientConfig is the TLS configuration for dialing a tunnel to a server
// that must present a certificate for serverName, signed by the CA bundle.
func ClientConfig(creds *Credentials, serverName string) *tls.Config {
	m := creds.Load()
	cfg := baseConfig(m)
	cfg.RootCAs = m.Roots
	cfg.ServerName = serverName
	// Always present our certificate. crypto/tls would otherwise send none
	// when it is not from a CA the server lists, and the server would report
	// "no client certificate" instead of naming the foreign issuer.
	cert := m.Cert
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// CheckALPN confirms both sides agreed on the Postern protocol.
func CheckALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return errors.New("peer does not speak " + ALPN + " (no matching ALPN): is it a Postern agent?")
	}
	return nil
}
