package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A partner that runs its own CA under this one gets an intermediate CA
// certificate with X.509 name constraints: it may certify only the DNS
// names, URI hosts and IP ranges it is permitted, and no CA under it
// (path length 0). Peers that trust this CA's root then refuse a
// certificate from the partner's CA for any other name, in the TLS
// handshake, before an allow list is read. Name constraints do not cover
// the subject CN or OU: allow lists that trust a partner's intermediate
// should match dns:, uri: or ip:, or name the intermediate with
// "from ca:sha256:<fingerprint>".

// DefaultIntermediateValidity is how long an intermediate CA is valid
// unless asked otherwise (never longer than the CA that signs it).
const DefaultIntermediateValidity = 2 * 365 * 24 * time.Hour

// Constraints are the names an intermediate CA may certify. A kind of name
// with nothing permitted is excluded entirely, so the partner cannot fall
// back on a kind the constraints leave open. Email names are always
// excluded: Postern does not match them.
type Constraints struct {
	DNS        []string     // domains: each permits the name and every name under it
	URIDomains []string     // hosts of URI names (spiffe://HOST/...), likewise
	IPRanges   []*net.IPNet // IP SANs must fall in one of these
}

func (c Constraints) empty() bool {
	return len(c.DNS) == 0 && len(c.URIDomains) == 0 && len(c.IPRanges) == 0
}

func (c Constraints) validate() error {
	if c.empty() {
		return errors.New("no names permitted: give at least one --permit-dns, --permit-uri or --permit-ip (an unconstrained partner CA could certify any name)")
	}
	for _, d := range append(append([]string{}, c.DNS...), c.URIDomains...) {
		if strings.Contains(d, "*") {
			return fmt.Errorf("permitted domain %q: write the domain without \"*\"; it permits every name under it", d)
		}
		if err := checkDNSName(d); err != nil {
			return fmt.Errorf("permitted domain: %w", err)
		}
	}
	for _, r := range c.IPRanges {
		if r == nil || len(r.IP) != len(r.Mask) {
			return fmt.Errorf("permitted IP range %v is not a CIDR range", r)
		}
	}
	return nil
}

// apply sets the name constraints on an intermediate CA template.
func (c Constraints) apply(tmpl *x509.Certificate) {
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedDNSDomains = lowerAll(c.DNS)
	tmpl.PermittedURIDomains = lowerAll(c.URIDomains)
	tmpl.PermittedIPRanges = c.IPRanges
	if len(c.DNS) == 0 {
		tmpl.ExcludedDNSDomains = []string{""} // an empty constraint matches every name
	}
	if len(c.URIDomains) == 0 {
		tmpl.ExcludedURIDomains = []string{""}
	}
	if len(c.IPRanges) == 0 {
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}
	tmpl.ExcludedEmailAddresses = []string{""}
}

// IntermediateOptions describe a partner's intermediate CA.
type IntermediateOptions struct {
	CommonName string        // required: the partner CA's name, shown in errors
	Permit     Constraints   // required: what it may certify
	Validity   time.Duration // 0 means DefaultIntermediateValidity
	KeyType    KeyType       // for a key made here; "" means ecdsa-p256
}

// SignIntermediate certifies pub as an intermediate CA that may sign only
// end-entity certificates (path length 0) for the names opts permits, and
// records it in the index (revoke it like any certificate). ca must allow
// a CA under it: a CA made by `postern pki init --intermediates`.
func (ca *CA) SignIntermediate(pub crypto.PublicKey, opts IntermediateOptions) (*x509.Certificate, error) {
	if ca.Cert.MaxPathLen == 0 {
		return nil, fmt.Errorf("the CA %s may not sign other CAs (its path length is 0): make a CA for partners with `postern pki init --intermediates`, give its ca.crt to your agents, and sign partners' CAs with that one", ca.Cert.Subject)
	}
	if err := checkName("CA name", opts.CommonName); err != nil {
		return nil, err
	}
	if err := opts.Permit.validate(); err != nil {
		return nil, err
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultIntermediateValidity
		if left := ca.Cert.NotAfter.Sub(ca.now()); left < validity {
			validity = left - time.Minute
		}
	}
	d, err := ca.draft(Names{CommonName: opts.CommonName}, pub, UsageBoth, validity)
	if err != nil {
		return nil, err
	}
	t := d.Template
	t.ExtKeyUsage = nil
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	t.IsCA, t.MaxPathLen, t.MaxPathLenZero = true, 0, true
	t.Subject = pkix.Name{CommonName: opts.CommonName}
	opts.Permit.apply(t)
	return d.Sign()
}

// InitIntermediate makes a key and an intermediate CA certificate for it
// signed by parent, and writes a CA folder in dir like Init: the partner
// runs `postern pki issue --dir DIR` there. Certificates it issues carry
// the intermediate after the leaf, so peers that trust only parent's root
// can build the chain.
func InitIntermediate(dir string, parent *CA, opts IntermediateOptions) (*CA, error) {
	for _, name := range []string{CertFile, KeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), ErrExists)
		}
	}
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	cert, err := parent.SignIntermediate(key.Public(), opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, Key: key, Dir: dir, Time: parent.Time}
	return ca, ca.writeNew()
}

// writeNew writes a new CA's files to ca.Dir, removing them all again when
// one fails.
func (ca *CA) writeNew() error {
	dir := ca.Dir
	keyPEM, err := MarshalKeyPEM(ca.Key)
	if err == nil {
		err = writeFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600)
	}
	if err == nil {
		err = writeFileAtomic(filepath.Join(dir, CertFile), CertPEM(ca.Cert), 0o644)
	}
	if err == nil {
		err = ca.saveIndex()
	}
	if err == nil {
		err = ca.saveRevoked()
	}
	if err == nil {
		_, err = ca.CRL(DefaultCRLValidity)
	}
	if err != nil {
		for _, name := range []string{KeyFile, CertFile, IndexFile, RevokedFile, CRLNumberFile, CRLFile} {
			os.Remove(filepath.Join(dir, name))
		}
	}
	return err
}

// IsIntermediate reports whether the CA's certificate was signed by
// another CA, so certificates it issues must carry it in their chain.
func (ca *CA) IsIntermediate() bool {
	c := ca.Cert
	return !bytes.Equal(c.RawIssuer, c.RawSubject) || c.CheckSignatureFrom(c) != nil
}

// ChainPEM is cert as PEM followed, for an intermediate CA, by the CA's
// own certificate: what a tls.cert file must hold for peers that trust
// only the root.
func (ca *CA) ChainPEM(cert *x509.Certificate) []byte {
	out := CertPEM(cert)
	if ca.IsIntermediate() {
		out = append(out, CertPEM(ca.Cert)...)
	}
	return out
}

// checkPermitted refuses names that ca's name constraints forbid, so an
// intermediate CA does not sign a certificate every peer would refuse.
// The handshake's verification is what enforces the constraints; this
// only says so earlier, in the CA's words.
func (ca *CA) checkPermitted(n Names) error {
	c := ca.Cert
	deny := func(kind, name string) error {
		return fmt.Errorf("%s %q is outside what the CA %s may certify (its name constraints permit %s): peers would refuse the certificate",
			kind, name, c.Subject, permittedText(c))
	}
	for _, d := range n.DNSNames {
		if !domainPermitted(strings.TrimPrefix(d, "*."), c.PermittedDNSDomains, c.ExcludedDNSDomains) {
			return deny("DNS name", d)
		}
	}
	for _, u := range n.URIs {
		if !domainPermitted(strings.ToLower(u.Hostname()), c.PermittedURIDomains, c.ExcludedURIDomains) {
			return deny("URI", u.String())
		}
	}
	for _, ip := range n.IPAddresses {
		if !ipPermitted(ip, c.PermittedIPRanges, c.ExcludedIPRanges) {
			return deny("IP address", ip.String())
		}
	}
	return nil
}

// domainPermitted applies RFC 5280 domain constraints: a constraint
// "example.com" covers example.com and every name under it, "" every name.
func domainPermitted(name string, permitted, excluded []string) bool {
	under := func(c string) bool {
		c = strings.ToLower(strings.TrimPrefix(c, "."))
		return c == "" || name == c || strings.HasSuffix(name, "."+c)
	}
	for _, c := range excluded {
		if under(c) {
			return false
		}
	}
	if len(permitted) == 0 {
		return true
	}
	for _, c := range permitted {
		if under(c) {
			return true
		}
	}
	return false
}

func ipPermitted(ip net.IP, permitted, excluded []*net.IPNet) bool {
	for _, r := range excluded {
		if r.Contains(ip) {
			return false
		}
	}
	if len(permitted) == 0 {
		return true
	}
	for _, r := range permitted {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// permittedText lists a CA's permitted names for messages.
func permittedText(c *x509.Certificate) string {
	var out []string
	for _, d := range c.PermittedDNSDomains {
		out = append(out, "dns:"+d)
	}
	for _, d := range c.PermittedURIDomains {
		out = append(out, "uri host "+d)
	}
	for _, r := range c.PermittedIPRanges {
		out = append(out, "ip:"+r.String())
	}
	if len(out) == 0 {
		return "no names"
	}
	return strings.Join(out, ", ")
}
