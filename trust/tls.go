package trust

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/wire"
)

// Files names the certificate material of one tunnel endpoint and how its
// peers' revocation is checked.
type Files struct {
	Cert       string   // PEM chain, leaf first
	Key        string   // PEM private key: PKCS#1, PKCS#8 or SEC1
	CA         string   // PEM bundle trusted to sign peer certificates
	CRL        []string // revocation lists, PEM or DER, each signed by a CA in the bundle
	MinVersion string   // "1.3" or "1.2"
	CRLStale   string   // a CRL past its next update: "refuse" or "warn" ("" refuses)
	OCSP       string   // "off", "soft" or "hard" ("" is off)
}

// FilesOf takes an endpoint's files and policies from a [tls] table.
func FilesOf(t config.TLS) Files {
	return Files{
		Cert: t.Cert, Key: t.Key, CA: t.CA, CRL: t.CRL,
		MinVersion: t.MinVersion, CRLStale: t.CRLStale, OCSP: t.OCSP,
	}
}

// Revocation policies, as written in the config.
const (
	CRLStaleRefuse = "refuse"
	CRLStaleWarn   = "warn"
	OCSPOff        = "off"
	OCSPSoft       = "soft" // an unreachable responder does not block a handshake
	OCSPHard       = "hard" // no answer from the responder, no tunnel
)

// Material is loaded, checked certificate material. It is immutable; a
// reload makes a new one.
type Material struct {
	Cert       tls.Certificate
	Leaf       *x509.Certificate
	Chain      []*x509.Certificate // the certificate file's chain, leaf first
	Roots      *x509.CertPool
	CAs        []*x509.Certificate // the CA bundle, in file order
	CASubjects []string            // trusted CA subjects, for error messages
	CRLs       []*CRL
	MinVersion uint16
	Files      Files // where the material came from; Reload reads them again

	sum [32]byte // hash of every file's content, to notice changes
}

// LoadMaterial reads and checks the files: the key must match the
// certificate, the CA bundle must hold at least one certificate, and each
// CRL must be signed by a CA in the bundle.
func LoadMaterial(f Files) (*Material, error) {
	raw, err := readFiles(f)
	if err != nil {
		return nil, err
	}
	return raw.material()
}

// parse checks the raw file contents and builds the material.
func (r *rawFiles) material() (*Material, error) {
	f := r.files
	m := &Material{Files: f, sum: r.sum()}
	var err error
	if m.MinVersion, err = config.TLSVersion(f.MinVersion); err != nil {
		return nil, fmt.Errorf("min_version: %w", err)
	}
	switch f.CRLStale {
	case "", CRLStaleRefuse, CRLStaleWarn:
	default:
		return nil, fmt.Errorf("crl_stale %q: use \"refuse\" or \"warn\"", f.CRLStale)
	}
	switch f.OCSP {
	case "", OCSPOff, OCSPSoft, OCSPHard:
	default:
		return nil, fmt.Errorf("ocsp %q: use \"off\", \"soft\" or \"hard\"", f.OCSP)
	}
	if m.Cert, m.Leaf, err = keyPair(f, r.cert, r.key); err != nil {
		return nil, err
	}
	for _, der := range m.Cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("cert %s: %w", f.Cert, err)
		}
		m.Chain = append(m.Chain, c)
	}
	if m.CAs, err = parseCAs(f.CA, r.ca); err != nil {
		return nil, err
	}
	m.Roots = x509.NewCertPool()
	for _, c := range m.CAs {
		m.Roots.AddCert(c)
		m.CASubjects = append(m.CASubjects, Subject(c))
	}
	for i, path := range f.CRL {
		crls, err := parseCRLFile(path, r.crl[i], m.CAs)
		if err != nil {
			return nil, err
		}
		m.CRLs = append(m.CRLs, crls...)
	}
	return m, nil
}

// LoadKeyPair reads a certificate chain and its private key and checks that
// they belong together. The error says which file is wrong and how.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, *x509.Certificate, error) {
	certPEM, err := readCert(certFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("cert: %w", err)
	}
	keyPEM, err := readKey(keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("key: %w", err)
	}
	return keyPair(Files{Cert: certFile, Key: keyFile}, certPEM, keyPEM)
}

func keyPair(f Files, certPEM, keyPEM []byte) (tls.Certificate, *x509.Certificate, error) {
	if hsm.IsURI(f.Key) {
		return tokenKeyPair(f, certPEM)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil && Swapped(certPEM, keyPEM) {
		return tls.Certificate{}, nil, &SwappedError{Cert: f.Cert, Key: f.Key}
	}
	if err != nil {
		return tls.Certificate{}, nil, explainKeyPair(f, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("cert %s: %w", f.Cert, err)
		}
	}
	return cert, leaf, nil
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

// LoadCACerts reads a PEM bundle of trusted certificates, in file order.
func LoadCACerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return parseCAs(path, data)
}

func parseCAs(path string, data []byte) ([]*x509.Certificate, error) {
	var cas []*x509.Certificate
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
			return nil, fmt.Errorf("ca %s: %w", path, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("ca %s: no PEM certificates found", path)
	}
	return cas, nil
}

// Subject names a certificate for people: its CN, or the whole subject.
func Subject(c *x509.Certificate) string {
	if c == nil {
		return "(no certificate)"
	}
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

// Credentials hold the current Material of one endpoint and the OCSP
// answers collected for its peers. Handshakes read the material once each;
// Store and Reload swap it for later handshakes without touching live
// tunnels. All methods are safe for concurrent use.
type Credentials struct {
	cur      atomic.Pointer[Material]
	log      atomic.Pointer[slog.Logger]
	reloadMu sync.Mutex // one Reload at a time
	ocsp     ocspCache
	pushed   atomic.Pointer[[]*CRL] // CRLs pushed over tunnels (pushed.go)
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

// SetLogger sets where warnings that do not stop a handshake go (an OCSP
// responder that did not answer in soft mode, a key file readable by
// others). The default is slog.Default. Setting it logs the key file's
// permission problem, if any, so the agent says it at start.
func (c *Credentials) SetLogger(l *slog.Logger) {
	c.log.Store(l)
	c.warnKeyPermission(c.Load())
}

func (c *Credentials) logger() *slog.Logger {
	if l := c.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// cipherSuites are what a tunnel offers under TLS 1.2: ECDHE key exchange
// with an AEAD cipher only, none of the CBC suites crypto/tls would add.
// (TLS 1.3 suites are all AEAD and not configurable.)
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func baseConfig(m *Material) *tls.Config {
	return &tls.Config{
		MinVersion:                  m.MinVersion,
		CipherSuites:                cipherSuites,
		Certificates:                []tls.Certificate{m.Cert},
		NextProtos:                  []string{wire.ALPN},
		DynamicRecordSizingDisabled: true, // bulk tunnels want full records at once
	}
}

// ServerConfig is the TLS configuration for accepting tunnels: a client
// certificate is required, verified against the current CA bundle, and
// checked against the current CRLs and (if enabled) OCSP on every
// handshake, resumed ones included. When peers are given, the client must
// match one of them. A client that asks why it was refused (AsksRefusal)
// gets the configuration of a refusal-reason connection (refusal.go).
func ServerConfig(creds *Credentials, peers ...identity.Pattern) *tls.Config {
	// One config per material, shared by the handshakes that use it: each
	// connection keeps its config for its life, and a hub holds thousands.
	type built struct {
		m   *Material
		cfg *tls.Config
	}
	var cached atomic.Pointer[built]
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: cipherSuites,
		NextProtos:   []string{wire.ALPN},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			m := creds.Load()
			if AsksRefusal(h) {
				return creds.refusalConfig(m, h, peers), nil
			}
			if b := cached.Load(); b != nil && b.m == m {
				return b.cfg, nil
			}
			cfg := baseConfig(m)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = m.Roots
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				return creds.verifyConnection(m, cs, SideServer, peers)
			}
			cached.Store(&built{m: m, cfg: cfg})
			return cfg, nil
		},
	}
}

// ClientConfig is the TLS configuration for dialing a tunnel to a server
// that must present a certificate for serverName, signed by the CA bundle,
// not revoked, and, when peers are given, matching one of them (a pin).
func ClientConfig(creds *Credentials, serverName string, peers ...identity.Pattern) *tls.Config {
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
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return creds.verifyConnection(m, cs, SideClient, peers)
	}
	return cfg
}

// verifyConnection runs after crypto/tls verified the chain (and on
// resumed sessions, where it re-checked the chain against the current
// roots): the peer must match a pin when pins are set, and nothing in its
// chain may be revoked.
func (c *Credentials) verifyConnection(m *Material, cs tls.ConnectionState, side Side, peers identity.List) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // crypto/tls refuses this case itself, with its own error
	}
	leaf := cs.PeerCertificates[0]
	if len(peers) > 0 {
		if _, ok := peers.MatchVerified(cs.VerifiedChains); !ok {
			return &PinError{Cert: leaf, Pins: peers.Strings()}
		}
	}
	return c.checkRevocation(m, cs.VerifiedChains, side, time.Now(), false)
}

// Recheck verifies the certificate chain of a live tunnel's peer against
// the current material: it must still build to a trusted CA, be within its
// validity, and not be revoked by a CRL or an OCSP answer. side is this
// end's role in the tunnel. A stale CRL or an OCSP responder that does not
// answer is not a reason to drop a live tunnel: Recheck reports only what
// says the peer is no longer trusted.
func (c *Credentials) Recheck(peerChain []*x509.Certificate, side Side, now time.Time) error {
	if len(peerChain) == 0 {
		return nil
	}
	m := c.Load()
	opts := x509.VerifyOptions{
		Roots:         m.Roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if side == SideServer {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, ic := range peerChain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	chains, err := peerChain[0].Verify(opts)
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: peerChain, Err: err}
	}
	return c.checkRevocation(m, chains, side, now, true)
}

// CheckALPN confirms both sides agreed on the Postern protocol.
func CheckALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != wire.ALPN {
		return errors.New("peer does not speak " + wire.ALPN + " (no matching wire.ALPN): is it a Postern agent?")
	}
	return nil
}
