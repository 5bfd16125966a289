// Package acmecert obtains and renews a server certificate from an ACME CA
// (RFC 8555) and writes it, with its key, into a state folder. It does not
// serve the certificate: the agent's [[server]] names the files as its cert
// and key, and the usual reload swaps each renewal in for new handshakes.
//
// The challenge is http-01, answered by HTTPHandler on a listener the
// caller runs (port 80 of each domain). tls-alpn-01 is not offered: it
// would put a second protocol on the tunnel listener, which answers only
// Postern's ALPN.
package acmecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
)

// Retry bounds after a failed attempt to obtain a certificate.
const (
	DefaultRetryMin = time.Minute
	DefaultRetryMax = time.Hour
)

// Manager obtains the certificate for Domains and keeps it renewed. Set
// the fields before calling any method; HTTPHandler and Run may then be
// used from different goroutines.
type Manager struct {
	Directory   string         // the CA's directory URL
	Domains     []string       // DNS names of the certificate, the first one its subject
	Email       string         // account contact, optional
	CertPath    string         // where the chain is written (PEM, leaf first)
	KeyPath     string         // where the certificate's key is written (PEM, 0600)
	AccountKey  string         // the account's key (PEM, 0600), made on first use
	Roots       *x509.CertPool // trust for the CA's HTTPS; nil = system roots
	RenewBefore time.Duration  // renew this long before expiry; 0 = a third of the lifetime
	RetryMin    time.Duration  // first retry delay after a failure; 0 = DefaultRetryMin
	RetryMax    time.Duration  // retry delay cap; 0 = DefaultRetryMax
	Log         *slog.Logger
	Changed     func() // called after new files were written, or nil

	mu     sync.Mutex
	tokens map[string]string // http-01 path → key authorization
}

// HTTPHandler answers the CA's http-01 requests for the challenges in
// progress; every other request gets 404.
func (m *Manager) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		body, ok := m.tokens[r.URL.Path]
		m.mu.Unlock()
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	})
}

func (m *Manager) setToken(path, body string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens == nil {
		m.tokens = map[string]string{}
	}
	if body == "" {
		delete(m.tokens, path)
	} else {
		m.tokens[path] = body
	}
}

// RenewAt is when the certificate at CertPath should be renewed: now when
// it is missing, unreadable or lacks a domain, else RenewBefore (or a third
// of its lifetime) before it expires, but not before a tenth of its
// lifetime has passed, so a renew_before longer than the lifetime cannot
// make a busy loop.
func (m *Manager) RenewAt(now time.Time) (time.Time, *x509.Certificate) {
	leaf, err := readLeaf(m.CertPath)
	if err != nil {
		return now, nil
	}
	for _, d := range m.Domains {
		if leaf.VerifyHostname(d) != nil {
			return now, leaf
		}
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	before := m.RenewBefore
	if before <= 0 {
		before = life / 3
	}
	at := leaf.NotAfter.Add(-before)
	if floor := leaf.NotBefore.Add(life / 10); at.Before(floor) {
		at = floor
	}
	return at, leaf
}

func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(b.Bytes)
}

// Run renews the certificate when RenewAt says, retrying failures with
// backoff, until ctx is done.
func (m *Manager) Run(ctx context.Context) {
	retry := m.retryMin()
	for {
		at, leaf := m.RenewAt(time.Now())
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := m.Obtain(ctx)
		if err == nil {
			retry = m.retryMin()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		attrs := []any{"directory", m.Directory, "err", err.Error(), "retry_in", retry.String()}
		if leaf != nil {
			attrs = append(attrs, "expires_in", time.Until(leaf.NotAfter).Round(time.Second).String())
		}
		m.Log.Error("acme: certificate renewal failed; the current certificate stays in use", attrs...)
		t = time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, m.retryMax())
	}
}

func (m *Manager) retryMin() time.Duration {
	if m.RetryMin > 0 {
		return m.RetryMin
	}
	return DefaultRetryMin
}

func (m *Manager) retryMax() time.Duration {
	if m.RetryMax > 0 {
		return m.RetryMax
	}
	return DefaultRetryMax
}

// Obtain orders a certificate for a fresh key now and writes both files.
func (m *Manager) Obtain(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(m.CertPath), 0o700); err != nil {
		return fmt.Errorf("acme state folder: %w", err)
	}
	c, err := m.client(ctx)
	if err != nil {
		return err
	}
	// No connection outlives the attempt: renewals are months apart.
	defer c.HTTPClient.Transport.(*http.Transport).CloseIdleConnections()
	order, err := c.AuthorizeOrder(ctx, acme.DomainIDs(m.Domains...))
	if err != nil {
		return fmt.Errorf("acme order %v at %s: %w", m.Domains, m.Directory, err)
	}
	for _, u := range order.AuthzURLs {
		if err := m.authorize(ctx, c, u); err != nil {
			return err
		}
	}
	uri := order.URI
	if order, err = c.WaitOrder(ctx, uri); err != nil {
		return fmt.Errorf("acme order %s: %w", uri, err)
	}
	if order.URI == "" {
		order.URI = uri
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("acme: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: m.Domains[0]}, DNSNames: m.Domains,
	}, key)
	if err != nil {
		return fmt.Errorf("acme: certificate request: %w", err)
	}
	chain, _, err := c.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		return fmt.Errorf("acme finalize %s: %w", order.FinalizeURL, err)
	}
	leaf, err := m.check(chain, key)
	if err != nil {
		return err
	}
	if err := m.write(chain, key); err != nil {
		return err
	}
	m.Log.Info("acme: certificate obtained", "domains", m.Domains, "serial", leaf.SerialNumber.Text(16),
		"issuer", leaf.Issuer.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "file", m.CertPath)
	if m.Changed != nil {
		m.Changed()
	}
	return nil
}

// check makes sure the CA sent a certificate for key and every domain.
func (m *Manager) check(chain [][]byte, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("acme: %s sent no certificate", m.Directory)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("acme: certificate from %s: %w", m.Directory, err)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("acme: certificate from %s is not for the key we sent", m.Directory)
	}
	for _, d := range m.Domains {
		if err := leaf.VerifyHostname(d); err != nil {
			return nil, fmt.Errorf("acme: certificate from %s: %w", m.Directory, err)
		}
	}
	return leaf, nil
}

// write puts the key, then the chain, in place, each by rename, so a
// reader never sees a half-written file.
func (m *Manager) write(chain [][]byte, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("acme: encode key: %w", err)
	}
	if err := writeAtomic(m.KeyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return err
	}
	var certs []byte
	for _, c := range chain {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return writeAtomic(m.CertPath, certs)
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// client is an ACME client with the account registered.
func (m *Manager) client(ctx context.Context) (*acme.Client, error) {
	key, err := m.accountKey()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: m.Roots, MinVersion: tls.VersionTLS12}
	c := &acme.Client{Key: key, DirectoryURL: m.Directory, UserAgent: "postern",
		HTTPClient: &http.Client{Transport: tr, Timeout: time.Minute}}
	acct := &acme.Account{}
	if m.Email != "" {
		acct.Contact = []string{"mailto:" + m.Email}
	}
	if _, err := c.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("acme account at %s: %w", m.Directory, err)
	}
	return c, nil
}

// accountKey reads the account key, or makes and writes one.
func (m *Manager) accountKey() (crypto.Signer, error) {
	data, err := os.ReadFile(m.AccountKey)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("acme account key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("acme account key: %w", err)
		}
		return key, writeAtomic(m.AccountKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	if err != nil {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("acme account key %s: no PEM block; remove the file to register a new account", m.AccountKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("acme account key %s: %w", m.AccountKey, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("acme account key %s: %T cannot sign", m.AccountKey, k)
	}
	return s, nil
}

// authorize answers the http-01 challenge of one authorization and waits
// for the CA to accept it.
func (m *Manager) authorize(ctx context.Context, c *acme.Client, url string) error {
	z, err := c.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("acme authorization %s: %w", url, err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	i := slices.IndexFunc(z.Challenges, func(ch *acme.Challenge) bool { return ch.Type == "http-01" })
	if i < 0 {
		return fmt.Errorf("acme authorization for %s: the CA offers no http-01 challenge", z.Identifier.Value)
	}
	ch := z.Challenges[i]
	body, err := c.HTTP01ChallengeResponse(ch.Token)
	if err != nil {
		return fmt.Errorf("acme challenge for %s: %w", z.Identifier.Value, err)
	}
	path := c.HTTP01ChallengePath(ch.Token)
	m.setToken(path, body)
	defer m.setToken(path, "")
	if _, err := c.Accept(ctx, ch); err != nil {
		return fmt.Errorf("acme challenge for %s: %w", z.Identifier.Value, err)
	}
	if _, err := c.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("acme authorization for %s (http-01 on port 80 of that name): %w", z.Identifier.Value, err)
	}
	return nil
}
