package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/postern-tunnel/postern/identity"
)

// Usage says which side of a tunnel a certificate may authenticate.
type Usage int

// The usages. Server certificates get ExtKeyUsageServerAuth, client
// certificates ExtKeyUsageClientAuth, UsageBoth both.
const (
	UsageServer Usage = 1 << iota // accepts tunnels
	UsageClient                   // dials tunnels
	UsageBoth   = UsageServer | UsageClient
)

// ParseUsage accepts "server", "client" or "both".
func ParseUsage(s string) (Usage, error) {
	switch strings.ToLower(s) {
	case "server":
		return UsageServer, nil
	case "client":
		return UsageClient, nil
	case "both":
		return UsageBoth, nil
	}
	return 0, fmt.Errorf("unknown usage %q: use server (accepts tunnels), client (dials tunnels) or both", s)
}

func (u Usage) String() string {
	switch u {
	case UsageServer:
		return "server"
	case UsageClient:
		return "client"
	case UsageBoth:
		return "both"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

func (u Usage) extKeyUsage() []x509.ExtKeyUsage {
	var eku []x509.ExtKeyUsage
	if u&UsageServer != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if u&UsageClient != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	return eku
}

// Names are the identities a certificate carries: what Postern matches as
// cn:, ou:, dns:, ip: and uri: in a service's allow list.
type Names struct {
	CommonName         string
	OrganizationalUnit []string
	DNSNames           []string
	IPAddresses        []net.IP
	URIs               []*url.URL
}

func (n Names) hasSAN() bool {
	return len(n.DNSNames) > 0 || len(n.IPAddresses) > 0 || len(n.URIs) > 0
}

// withDefaults returns n with DNS names in lower case and, when there is no
// common name, the first DNS name as the common name.
func (n Names) withDefaults() Names {
	dns := make([]string, len(n.DNSNames))
	for i, d := range n.DNSNames {
		dns[i] = strings.ToLower(d)
	}
	n.DNSNames = dns
	if n.CommonName == "" && len(dns) > 0 {
		n.CommonName = dns[0]
	}
	return n
}

func (n Names) validate() error {
	if n.CommonName == "" && !n.hasSAN() {
		return errors.New("no identity: give a common name, a DNS name, an IP address or a URI")
	}
	if n.CommonName != "" {
		if err := checkName("common name", n.CommonName); err != nil {
			return err
		}
	}
	for _, ou := range n.OrganizationalUnit {
		if err := checkName("OU", ou); err != nil {
			return err
		}
	}
	for _, d := range n.DNSNames {
		if err := checkDNSName(d); err != nil {
			return err
		}
	}
	for _, ip := range n.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("IP address %v is not IPv4 or IPv6", ip)
		}
	}
	for _, u := range n.URIs {
		if u == nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "" && u.Path == "") {
			return fmt.Errorf("URI %q is not absolute: write it with a scheme, like spiffe://example.com/partner-b", u)
		}
		if !isPrintableASCII(u.String()) {
			return fmt.Errorf("URI %q: only printable ASCII is allowed (percent-encode the rest)", u)
		}
	}
	return nil
}

// checkName accepts a subject attribute of 1 to 64 printable characters.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len([]rune(s)) > 64 {
		return fmt.Errorf("%s %q is longer than 64 characters", what, s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s %q contains a control character", what, s)
		}
	}
	return nil
}

// checkDNSName accepts host names (letters, digits, '-', '_') with an
// optional "*." wildcard as the whole first label.
func checkDNSName(d string) error {
	bad := func(why string) error { return fmt.Errorf("DNS name %q: %s", d, why) }
	if d == "" {
		return bad("empty")
	}
	if len(d) > 253 {
		return bad("longer than 253 characters")
	}
	if strings.HasSuffix(d, ".") {
		return bad("remove the trailing dot")
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 2 {
			continue
		}
		if l == "" || len(l) > 63 {
			return bad("each dot-separated label must have 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("a label may not start or end with '-'")
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				if c == '*' {
					return bad("a wildcard must be the whole first label of at least three, like *.example.com")
				}
				return bad(fmt.Sprintf("character %q is not allowed (letters, digits, '-' and '_' only; use punycode for other letters)", c))
			}
		}
	}
	return nil
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// IssueOptions describe a certificate the CA makes together with its key.
type IssueOptions struct {
	Names                  // CommonName defaults to the first DNS name
	Usage    Usage         // required
	Validity time.Duration // 0 means DefaultValidity
	KeyType  KeyType       // "" means ecdsa-p256
	// Key, when set, is certified instead of a new key (renewal in place:
	// spki: pins on it keep matching); KeyType is then ignored.
	Key crypto.Signer
}

// NewCertificate makes a key (or takes opts.Key) and a certificate for it, records the
// certificate in the index and returns both. Tests in other packages use it
// to get a ready tls.Certificate without touching files.
func (ca *CA) NewCertificate(opts IssueOptions) (*x509.Certificate, crypto.Signer, error) {
	names := opts.Names.withDefaults()
	if err := names.validate(); err != nil {
		return nil, nil, err
	}
	key, err := keyFor(opts.Key, opts.KeyType)
	if err != nil {
		return nil, nil, err
	}
	d, err := ca.draft(names, key.Public(), opts.Usage, opts.Validity)
	if err != nil {
		return nil, nil, err
	}
	cert, err := d.Sign()
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// Issue is NewCertificate with the results encoded as PEM: the certificate
// ("CERTIFICATE") and its private key (PKCS#8 "PRIVATE KEY"). The caller
// writes the key with mode 0600.
func (ca *CA) Issue(opts IssueOptions) (certPEM, keyPEM []byte, err error) {
	cert, key, err := ca.NewCertificate(opts)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return ca.ChainPEM(cert), keyPEM, nil
}

// RequestOptions describe a certificate request (CSR) a partner makes
// locally with NewRequest.
type RequestOptions struct {
	Names           // CommonName defaults to the first DNS name
	KeyType KeyType // "" means ecdsa-p256
	// Key, when set, signs the request instead of a new key (renewal with
	// the same key); KeyType is then ignored.
	Key crypto.Signer
}

// NewRequest makes a private key and a certificate request signed by it. The
// request goes to the CA; the key stays where it was made.
func NewRequest(opts RequestOptions) (csrPEM, keyPEM []byte, err error) {
	names := opts.Names.withDefaults()
	if err := names.validate(); err != nil {
		return nil, nil, err
	}
	key, err := keyFor(opts.Key, opts.KeyType)
	if err != nil {
		return nil, nil, err
	}
	if csrPEM, err = Request(opts.Names, key); err != nil {
		return nil, nil, err
	}
	keyPEM, err = MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return csrPEM, keyPEM, nil
}

// Request makes a certificate request for names signed by key, which may
// be a key in a token (it only signs). Nothing secret is returned.
func Request(n Names, key crypto.Signer) (csrPEM []byte, err error) {
	names := n.withDefaults()
	if err := names.validate(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: names.CommonName, OrganizationalUnit: names.OrganizationalUnit},
		DNSNames:    names.DNSNames,
		IPAddresses: names.IPAddresses,
		URIs:        names.URIs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SignOptions are the CA's decisions when it signs a request: usage and
// validity always come from here, never from the request. A non-empty field
// of Override replaces the same field of the request (for example
// Override.DNSNames replaces every DNS name the request asked for).
type SignOptions struct {
	Usage    Usage         // required
	Validity time.Duration // 0 means DefaultValidity
	Override Names
}

// A Draft is a certificate the CA has prepared but not signed yet: what
// `postern pki sign` shows before it asks for confirmation. Template is
// exactly what Sign will sign, serial number included.
//
// A Draft is signed at most once and must not be used by two goroutines.
type Draft struct {
	Template *x509.Certificate // PublicKey holds the key to certify
	Ignored  []string          // what the request asked for that the CA does not copy

	ca     *CA
	signed bool
}

// Prepare checks a request and drafts the certificate the CA would sign for
// it. It refuses a request whose signature does not verify and keys that are
// weak or unsupported.
func (ca *CA) Prepare(csr *x509.CertificateRequest, opts SignOptions) (*Draft, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("request signature does not verify (altered or corrupt; ask for a new one): %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	names := Names{
		CommonName:         csr.Subject.CommonName,
		OrganizationalUnit: csr.Subject.OrganizationalUnit,
		DNSNames:           csr.DNSNames,
		IPAddresses:        csr.IPAddresses,
		URIs:               csr.URIs,
	}
	o := opts.Override
	if o.CommonName != "" {
		names.CommonName = o.CommonName
	}
	if len(o.OrganizationalUnit) > 0 {
		names.OrganizationalUnit = o.OrganizationalUnit
	}
	if len(o.DNSNames) > 0 {
		names.DNSNames = o.DNSNames
	}
	if len(o.IPAddresses) > 0 {
		names.IPAddresses = o.IPAddresses
	}
	if len(o.URIs) > 0 {
		names.URIs = o.URIs
	}
	names.DNSNames = lowerAll(names.DNSNames) // no CN default here: the CA signs what it shows
	if err := names.validate(); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	d, err := ca.draft(names, csr.PublicKey, opts.Usage, opts.Validity)
	if err != nil {
		return nil, err
	}
	d.Ignored = ignoredParts(csr)
	return d, nil
}

// Sign is Prepare followed by Draft.Sign.
func (ca *CA) Sign(csr *x509.CertificateRequest, opts SignOptions) (*x509.Certificate, error) {
	d, err := ca.Prepare(csr, opts)
	if err != nil {
		return nil, err
	}
	return d.Sign()
}

func lowerAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	return out
}

// ignoredParts lists what a request asked for beyond CN, OU and SANs.
func ignoredParts(csr *x509.CertificateRequest) []string {
	var out []string
	s := csr.Subject
	s.CommonName, s.OrganizationalUnit = "", nil // s.Names keeps unusual attributes only
	if rest := s.String(); rest != "" {
		out = append(out, "subject "+rest)
	}
	for _, e := range csr.EmailAddresses {
		out = append(out, "email:"+e)
	}
	if n := len(csr.Extensions); n > 0 {
		var other int
		for _, e := range csr.Extensions {
			if !e.Id.Equal(oidSubjectAltName) {
				other++
			}
		}
		if other > 0 {
			out = append(out, fmt.Sprintf("%d requested extension(s) such as key usage or basic constraints (the CA sets its own)", other))
		}
	}
	return out
}

// draft builds the certificate template for names and pub.
func (ca *CA) draft(names Names, pub crypto.PublicKey, usage Usage, validity time.Duration) (*Draft, error) {
	if usage&^UsageBoth != 0 || usage == 0 {
		return nil, errors.New("usage is required: server (accepts tunnels), client (dials tunnels) or both")
	}
	if err := ca.checkKeyNotCompromised(pub); err != nil {
		return nil, err
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("validity %v is negative", validity)
	}
	now := ca.now()
	notAfter := now.Add(validity)
	if now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the CA certificate %s expired on %s: make a new CA and give its ca.crt to every agent", ca.Cert.Subject, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the certificate would outlive the CA (CA valid until %s): choose a validity under %s, or make a new CA", ca.Cert.NotAfter.UTC().Format(time.RFC3339), days(ca.Cert.NotAfter.Sub(now)))
	}
	if err := ca.checkPermitted(names); err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment // TLS 1.2 RSA key exchange
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names.CommonName, OrganizationalUnit: names.OrganizationalUnit},
		DNSNames:              names.DNSNames,
		IPAddresses:           names.IPAddresses,
		URIs:                  names.URIs,
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           usage.extKeyUsage(),
		BasicConstraintsValid: true,
		PublicKey:             pub,
		Issuer:                ca.Cert.Subject,
	}
	return &Draft{Template: tmpl, ca: ca}, nil
}

// Sign signs the draft with the CA key and records the certificate in the
// CA's index.
func (d *Draft) Sign() (*x509.Certificate, error) {
	if d.signed {
		return nil, errors.New("draft already signed: prepare a new one")
	}
	ca := d.ca
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var cert *x509.Certificate
	err := ca.update(func() error {
		serial := FormatSerial(d.Template.SerialNumber)
		for _, r := range ca.index {
			if r.Serial == serial {
				return fmt.Errorf("serial %s is already in use: prepare a new draft", serial)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, d.Template, ca.Cert, d.Template.PublicKey, ca.Key)
		if err != nil {
			return fmt.Errorf("sign certificate: %w", err)
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			return err
		}
		d.signed = true
		ca.index = append(ca.index, Record{
			Serial:     serial,
			Subject:    cert.Subject.String(),
			Identities: identity.Identities(cert),
			Usage:      recordUsage(cert),
			NotBefore:  cert.NotBefore,
			NotAfter:   cert.NotAfter,
			IssuedAt:   ca.now().UTC(),
		})
		if err := ca.saveIndex(); err != nil {
			ca.index = ca.index[:len(ca.index)-1]
			return fmt.Errorf("record certificate %s in %s: %w", serial, IndexFile, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cert, nil
}

func usageOf(c *x509.Certificate) Usage {
	var u Usage
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			u |= UsageServer
		case x509.ExtKeyUsageClientAuth:
			u |= UsageClient
		case x509.ExtKeyUsageAny:
			u |= UsageBoth
		}
	}
	return u
}

// days writes a duration in whole days when it is at least one day.
func days(d time.Duration) string {
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// recordUsage is the usage written in the index: server, client, both, or
// "ca" for a partner's intermediate CA.
func recordUsage(c *x509.Certificate) string {
	if c.IsCA {
		return "ca"
	}
	return usageOf(c).String()
}

// keyFor returns key when set (after checking it is strong enough), or a
// new key of type kt.
func keyFor(key crypto.Signer, kt KeyType) (crypto.Signer, error) {
	if key == nil {
		return GenerateKey(kt)
	}
	if err := checkPublicKey(key.Public()); err != nil {
		return nil, err
	}
	return key, nil
}
