package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/wire"
)

// EnrollOptions describe one enrollment of a new site.
type EnrollOptions struct {
	Token   string        // as `postern pki invite` printed it
	KeyType capki.KeyType // of the key made here; "" means ecdsa-p256
	// Names, when set, are asked for instead of every identity the token
	// lists (a subset is granted; anything else is refused by the hub).
	Names *capki.Names
	Dial  func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	// Timeout bounds the whole exchange; 0 means 30s.
	Timeout time.Duration
}

// Enrolled is what an enrollment brought back, and the key made for it.
type Enrolled struct {
	Token    capki.Token
	Cert     *x509.Certificate
	ChainPEM []byte // leaf first
	CAPEM    []byte // the CA the hub signs with: trust it as [tls] ca
	Key      crypto.Signer
	KeyPEM   []byte
}

// EnrollRefusedError is a refusal the hub sent, in its words.
type EnrollRefusedError struct {
	Hub    string
	Code   wire.EnrollCode
	Reason string
}

func (e *EnrollRefusedError) Error() string {
	return fmt.Sprintf("enrollment refused by hub %s: %s: %s", e.Hub, e.Code, e.Reason)
}

// AnotherHubError: the server the token sends this site to does not chain
// to the CA the token names. The token was not sent.
type AnotherHubError struct {
	Hub       string
	Want      string   // sha256 of the token's CA
	Presented []string // subject and sha256 of each certificate the server sent
}

func (e *AnotherHubError) Error() string {
	return fmt.Sprintf("enrollment refused by this site: hub %s is another hub: its certificate chain does not end in the CA the token names (sha256:%s); it presented %s — the token was not sent; check the address, or ask for a token from this hub's operator",
		e.Hub, e.Want, strings.Join(e.Presented, "; "))
}

// Enroll makes a key here, authenticates the hub named in the token by the
// token's CA fingerprint, and sends it the token and a certificate request.
// Only the request and the token leave this process; nothing is written.
func Enroll(ctx context.Context, opts EnrollOptions) (*Enrolled, error) {
	tok, err := capki.ParseToken(opts.Token)
	if err != nil {
		return nil, err
	}
	// Expiry is the hub's to judge (this host's clock may be off): it
	// says so by name.
	names := opts.Names
	if names == nil {
		n, err := capki.NamesFromIdentities(tok.Identities)
		if err != nil {
			return nil, fmt.Errorf("enrollment token %s: %w", tok.IDString(), err)
		}
		names = &n
	}
	key, err := capki.GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	csrPEM, err := capki.Request(*names, key)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(csrPEM)
	resp, err := exchange(ctx, tok, opts, wire.EnrollRequest{Token: opts.Token, CSR: block.Bytes})
	if err != nil {
		return nil, err
	}
	return accept(tok, key, resp)
}

// exchange sends the request to the token's hub and reads the answer.
func exchange(ctx context.Context, tok capki.Token, opts EnrollOptions, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", tok.Hub)
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s: %w", tok.Hub, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(tok.Hub)
	c := tls.Client(raw, &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{wire.EnrollALPN},
		ServerName: host,
		// The chain is verified below, against the token's CA alone.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyHub(cs.PeerCertificates, tok, host)
		},
	})
	if err := c.HandshakeContext(ctx); err != nil {
		var ah *AnotherHubError
		if errors.As(err, &ah) {
			return wire.EnrollResponse{}, ah
		}
		if strings.Contains(err.Error(), "no application protocol") {
			return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s does not serve enrollment (no [ca] in its config, or an older Postern): %w", tok.Hub, err)
		}
		return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s: TLS handshake: %w", tok.Hub, err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.EnrollALPN {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s does not serve enrollment (no [ca] in its config, or an older Postern)", tok.Hub)
	}
	b, err := wire.AppendEnrollRequest(nil, req)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	if _, err := c.Write(b); err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s: send request: %w", tok.Hub, err)
	}
	resp, err := wire.ReadEnrollResponse(c)
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("enroll: hub %s: read answer: %w", tok.Hub, err)
	}
	if resp.Code != wire.EnrollOK {
		return wire.EnrollResponse{}, &EnrollRefusedError{Hub: tok.Hub, Code: resp.Code, Reason: resp.Reason}
	}
	return resp, nil
}

// verifyHub accepts a server whose chain verifies, for host, up to a CA
// certificate it presented whose SHA-256 is the token's.
func verifyHub(certs []*x509.Certificate, tok capki.Token, host string) error {
	var anchor *x509.Certificate
	presented := make([]string, 0, len(certs))
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		presented = append(presented, fmt.Sprintf("%q sha256:%x", c.Subject.String(), sum[:]))
		if sum == tok.CA && c.IsCA {
			anchor = c
		}
	}
	if anchor == nil || len(certs) == 0 {
		return &AnotherHubError{Hub: tok.Hub, Want: hex.EncodeToString(tok.CA[:]), Presented: presented}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		DNSName: host, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("hub %s: its certificate does not verify under the token's CA: %w", tok.Hub, err)
	}
	return nil
}

// accept checks what the hub sent: a certificate for the key made here,
// under the token's CA.
func accept(tok capki.Token, key crypto.Signer, resp wire.EnrollResponse) (*Enrolled, error) {
	cert, err := capki.ParseCertPEM(resp.Chain)
	if err != nil {
		return nil, fmt.Errorf("enroll: hub %s: certificate chain: %w", tok.Hub, err)
	}
	ca, err := capki.ParseCertPEM(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("enroll: hub %s: CA bundle: %w", tok.Hub, err)
	}
	if sha256.Sum256(ca.Raw) != tok.CA {
		return nil, fmt.Errorf("enroll: hub %s sent a CA bundle for another CA than the token's", tok.Hub)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("enroll: hub %s sent a certificate for another key", tok.Hub)
	}
	keyPEM, err := capki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Enrolled{Token: tok, Cert: cert, ChainPEM: resp.Chain, CAPEM: resp.CA, Key: key, KeyPEM: keyPEM}, nil
}

// EnrollFiles enrolls and writes [tls] cert, key and ca of cfg, each
// atomically: the key with mode 0600 (an existing key file keeps its mode
// and group), the CA appended to an existing bundle that lacks it. It
// refuses to replace an existing certificate.
func EnrollFiles(ctx context.Context, cfg *config.Config, opts EnrollOptions) (*Enrolled, error) {
	t := cfg.TLS
	if t.Cert == "" || t.Key == "" || t.CA == "" {
		return nil, fmt.Errorf("config %s: [tls] must name cert, key and ca files for the enrollment to write", cfg.Path)
	}
	if strings.HasPrefix(t.Key, "pkcs11:") {
		return nil, fmt.Errorf("config %s: [tls] key is in a token (%s): enrollment makes a key file; use `postern pki request --key pkcs11:...` instead", cfg.Path, "pkcs11:")
	}
	if _, err := os.Lstat(t.Cert); err == nil {
		return nil, fmt.Errorf("%s already exists: this site has a certificate; remove it to enroll again", t.Cert)
	}
	e, err := Enroll(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := capki.ReplaceFile(t.Key, e.KeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write key %s: %w", t.Key, err)
	}
	caPEM, err := mergeCA(t.CA, e.CAPEM)
	if err != nil {
		return nil, err
	}
	if caPEM != nil {
		if err := capki.ReplaceFile(t.CA, caPEM, 0o644); err != nil {
			return nil, fmt.Errorf("write CA bundle %s: %w", t.CA, err)
		}
	}
	// The certificate last: its presence says the enrollment is complete.
	if err := capki.ReplaceFile(t.Cert, e.ChainPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write certificate %s: %w", t.Cert, err)
	}
	return e, nil
}

// mergeCA returns the bundle to write at path: ca alone, the existing
// bundle with ca appended, or nil when the bundle holds ca already.
func mergeCA(path string, ca []byte) ([]byte, error) {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ca, nil
	}
	if err != nil {
		return nil, err
	}
	want, _ := pem.Decode(ca)
	for rest := old; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if want != nil && bytes.Equal(b.Bytes, want.Bytes) {
			return nil, nil
		}
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	return append(old, ca...), nil
}
