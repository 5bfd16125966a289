package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/postern-tunnel/postern/identity"
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// An Object is one thing found in a file given to `postern pki show`.
// Exactly one field is set.
type Object struct {
	Certificate *x509.Certificate
	Request     *x509.CertificateRequest
	CRL         *x509.RevocationList
	// PublicKey is the public half of a private key found in the file; the
	// private key itself is not kept.
	PublicKey crypto.PublicKey
}

// ParseObjects reads every certificate, certificate request, CRL and private
// key in data, which is PEM (any number of blocks, text around them is
// ignored) or a single DER certificate, request or CRL.
func ParseObjects(data []byte) ([]Object, error) {
	var objs []Object
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		o, skip, err := parseBlock(block)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", len(objs)+1, block.Type, err)
		}
		if !skip {
			objs = append(objs, o)
		}
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("a PEM block could not be read: the file is truncated or its base64 is damaged")
	}
	if len(objs) > 0 {
		return objs, nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("the file is empty")
	}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return nil, errors.New("no certificate, certificate request, CRL or private key in this PEM file")
	}
	return parseDER(data)
}

func parseBlock(b *pem.Block) (o Object, skip bool, err error) {
	switch b.Type {
	case "CERTIFICATE":
		o.Certificate, err = x509.ParseCertificate(b.Bytes)
	case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
		o.Request, err = x509.ParseCertificateRequest(b.Bytes)
	case "X509 CRL":
		o.CRL, err = x509.ParseRevocationList(b.Bytes)
	case "EC PARAMETERS": // openssl ecparam -genkey writes these before the key
		return o, true, nil
	default:
		var key crypto.Signer
		key, err = parseKeyBlock(b)
		if err == errNotAKey {
			return o, false, errors.New("unsupported PEM type: expected CERTIFICATE, CERTIFICATE REQUEST, X509 CRL or PRIVATE KEY")
		}
		if err == nil {
			o.PublicKey = key.Public()
		}
	}
	return o, false, err
}

func parseDER(der []byte) ([]Object, error) {
	if c, err := x509.ParseCertificate(der); err == nil {
		return []Object{{Certificate: c}}, nil
	}
	if r, err := x509.ParseCertificateRequest(der); err == nil {
		return []Object{{Request: r}}, nil
	}
	if l, err := x509.ParseRevocationList(der); err == nil {
		return []Object{{CRL: l}}, nil
	}
	return nil, errors.New("not a certificate, certificate request or CRL, in PEM or DER")
}

// DescribeOptions tune Describe.
type DescribeOptions struct {
	Now time.Time         // zero means time.Now()
	CA  *x509.Certificate // when set, certificates and CRLs are checked against it
	// Intermediates may complete a certificate's chain to CA (the CAs that
	// follow a leaf in a chain file).
	Intermediates []*x509.Certificate
}

// Describe writes a human-readable view of o: subject, validity, key, usage,
// and the identities Postern matches.
func Describe(o Object, opts DescribeOptions) string {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	var w writer
	switch {
	case o.Certificate != nil:
		w.line("certificate")
		describeCert(&w, o.Certificate, opts)
	case o.Request != nil:
		describeRequest(&w, o.Request)
	case o.CRL != nil:
		describeCRL(&w, o.CRL, opts)
	case o.PublicKey != nil:
		w.line("private key (not shown)")
		w.field("key", KeyDescription(o.PublicKey))
		w.identities("identities Postern matches", withSPKI(nil, o.PublicKey))
	default:
		w.line("nothing")
	}
	return w.String()
}

func describeCert(w *writer, c *x509.Certificate, opts DescribeOptions) {
	w.field("subject", dn(c.Subject.String()))
	w.field("issuer", dn(c.Issuer.String()))
	if c.SerialNumber != nil {
		w.field("serial", FormatSerial(c.SerialNumber))
	}
	w.field("valid", fmt.Sprintf("%s to %s (%s)", stamp(c.NotBefore), stamp(c.NotAfter), validityState(c.NotBefore, c.NotAfter, opts.Now)))
	w.field("key", KeyDescription(c.PublicKey))
	w.field("usage", usageText(c))
	if opts.CA != nil && len(c.Raw) > 0 {
		w.field("chain", chainState(c, opts))
	}
	w.identities("identities Postern matches (for allow = [...])", identity.Identities(c))
}

func describeRequest(w *writer, r *x509.CertificateRequest) {
	w.line("certificate request")
	w.field("subject", dn(r.Subject.String()))
	w.field("key", KeyDescription(r.PublicKey))
	if err := r.CheckSignature(); err != nil {
		w.field("signature", "DOES NOT VERIFY: the request was altered or damaged; ask for a new one ("+err.Error()+")")
	} else {
		w.field("signature", "valid (made with the private key of this request)")
	}
	for _, e := range r.EmailAddresses {
		w.field("email", e+" (ignored by the CA)")
	}
	names := identity.NameIdentities(&x509.Certificate{
		Subject: r.Subject, DNSNames: r.DNSNames, IPAddresses: r.IPAddresses, URIs: r.URIs,
	})
	w.identities("identities requested (sha256: exists only once signed)", withSPKI(names, r.PublicKey))
}

func describeCRL(w *writer, l *x509.RevocationList, opts DescribeOptions) {
	w.line("certificate revocation list")
	w.field("issuer", dn(l.Issuer.String()))
	if l.Number != nil {
		w.field("number", l.Number.String())
	}
	w.field("this update", stamp(l.ThisUpdate))
	switch {
	case l.NextUpdate.IsZero():
		w.field("next update", "none given")
	case opts.Now.After(l.NextUpdate):
		w.field("next update", fmt.Sprintf("%s (OVERDUE by %s: agents will stop trusting peers; re-sign it with `postern pki crl`)", stamp(l.NextUpdate), human(opts.Now.Sub(l.NextUpdate))))
	default:
		w.field("next update", fmt.Sprintf("%s (in %s)", stamp(l.NextUpdate), human(l.NextUpdate.Sub(opts.Now))))
	}
	if opts.CA != nil {
		if err := l.CheckSignatureFrom(opts.CA); err != nil {
			w.field("signature", fmt.Sprintf("DOES NOT VERIFY with %s: %v", dn(opts.CA.Subject.String()), err))
		} else {
			w.field("signature", "verified by "+dn(opts.CA.Subject.String()))
		}
	}
	w.field("revoked", fmt.Sprintf("%d certificate(s)", len(l.RevokedCertificateEntries)))
	for _, e := range l.RevokedCertificateEntries {
		w.line(fmt.Sprintf("    serial %s  %s  %s", FormatSerial(e.SerialNumber), stamp(e.RevocationTime), ReasonName(e.ReasonCode)))
	}
}

func chainState(c *x509.Certificate, opts DescribeOptions) string {
	roots := x509.NewCertPool()
	roots.AddCert(opts.CA)
	inter := x509.NewCertPool()
	for _, ic := range opts.Intermediates {
		inter.AddCert(ic)
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: opts.Now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Sprintf("DOES NOT VERIFY with %s: %v", dn(opts.CA.Subject.String()), err)
	}
	return "verified by " + dn(opts.CA.Subject.String())
}

func usageText(c *x509.Certificate) string {
	if c.IsCA {
		if c.MaxPathLenZero || c.MaxPathLen == 0 {
			return "CA (signs certificates; no intermediate CAs below it)"
		}
		return "CA (signs certificates)"
	}
	switch u := usageOf(c); {
	case u == UsageBoth:
		return "server and client (accepts and dials tunnels)"
	case u == UsageServer:
		return "server (accepts tunnels; cannot dial)"
	case u == UsageClient:
		return "client (dials tunnels; cannot accept)"
	case len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0:
		return "any (no extended key usage)"
	}
	return "neither server nor client: Postern peers will refuse it"
}

func validityState(from, to, now time.Time) string {
	switch {
	case now.Before(from):
		return "NOT YET VALID: starts in " + human(from.Sub(now))
	case now.After(to):
		return "EXPIRED " + human(now.Sub(to)) + " ago"
	}
	return "expires in " + human(to.Sub(now))
}

// human writes a duration the way people say it: "90 days", "3h12m", "7m".
func human(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int((d+12*time.Hour)/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func dn(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s
}

// writer collects aligned "label  value" lines. Values come from files
// anyone may have written, so a line with a character that is not printable
// (a terminal escape, a bidi override) is written quoted.
type writer struct{ strings.Builder }

func (w *writer) line(s string) { w.WriteString(printable(s) + "\n") }

func (w *writer) field(label, value string) {
	w.line(fmt.Sprintf("  %-12s %s", label, value))
}

func (w *writer) identities(title string, ids []string) {
	w.line("  " + title + ":")
	for _, id := range ids {
		w.line("    " + id)
	}
}

// printable returns s, or s quoted when it holds a non-printable character.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// withSPKI appends the spki: identity of pub when the key can be encoded.
func withSPKI(ids []string, pub crypto.PublicKey) []string {
	if pub == nil {
		return ids
	}
	if spki, err := identity.KeyHash(pub); err == nil {
		return append(ids, identity.KindSPKI+":"+spki)
	}
	return ids
}

// String shows what the draft will sign, then what the CA did not copy from
// the request.
func (d *Draft) String() string {
	var w writer
	w.line("certificate to sign")
	t := d.Template
	w.field("subject", dn(t.Subject.String()))
	w.field("issuer", dn(d.ca.Cert.Subject.String()))
	w.field("serial", FormatSerial(t.SerialNumber))
	w.field("valid", fmt.Sprintf("%s to %s (%s)", stamp(t.NotBefore), stamp(t.NotAfter), days(t.NotAfter.Sub(t.NotBefore.Add(ClockSkew)))))
	w.field("key", KeyDescription(t.PublicKey))
	w.field("usage", usageText(t))
	w.identities("identities Postern will match (sha256: exists only once signed)", withSPKI(identity.NameIdentities(t), t.PublicKey))
	if len(d.Ignored) > 0 {
		w.line("  not copied from the request:")
		for _, s := range d.Ignored {
			w.line("    " + s)
		}
	}
	return w.String()
}
