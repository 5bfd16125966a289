package trust

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/pki"
)

// CRL is one certificate revocation list whose signature was checked
// against a CA in the bundle. It is immutable.
type CRL struct {
	Path   string // the file it came from
	List   *x509.RevocationList
	Issuer *x509.Certificate // the CA in the bundle that signed it

	revoked map[string]x509.RevocationListEntry // by serial, hex
}

// ParseCRLs reads the CRLs in data: any number of PEM "X509 CRL" blocks,
// or one DER CRL. It checks the encoding only, not the signature.
func ParseCRLs(data []byte) ([]*x509.RevocationList, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("not a CRL in PEM or DER form: %w", err)
		}
		return []*x509.RevocationList{l}, nil
	}
	var out []*x509.RevocationList
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" && block.Type != "CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CRL %d in the file: %w", len(out)+1, err)
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CRL found (expected -----BEGIN X509 CRL-----)")
	}
	return out, nil
}

// LoadCRLFile reads the CRLs in path and checks that each is signed by one
// of cas.
func LoadCRLFile(path string, cas []*x509.Certificate) ([]*CRL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	return parseCRLFile(path, data, cas)
}

func parseCRLFile(path string, data []byte, cas []*x509.Certificate) ([]*CRL, error) {
	lists, err := ParseCRLs(data)
	if err != nil {
		return nil, fmt.Errorf("crl %s: %w", path, err)
	}
	out := make([]*CRL, 0, len(lists))
	for _, l := range lists {
		issuer, err := crlIssuer(l, cas)
		if err != nil {
			return nil, fmt.Errorf("crl %s: %w", path, err)
		}
		c := &CRL{Path: path, List: l, Issuer: issuer, revoked: make(map[string]x509.RevocationListEntry, len(l.RevokedCertificateEntries))}
		for _, e := range l.RevokedCertificateEntries {
			if e.SerialNumber != nil {
				c.revoked[e.SerialNumber.Text(16)] = e
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// crlIssuer finds the CA in cas that signed l.
func crlIssuer(l *x509.RevocationList, cas []*x509.Certificate) (*x509.Certificate, error) {
	var sigErr error
	for _, ca := range cas {
		if !bytes.Equal(ca.RawSubject, l.RawIssuer) {
			continue
		}
		err := l.CheckSignatureFrom(ca)
		if err == nil {
			return ca, nil
		}
		sigErr = fmt.Errorf("its signature does not verify with CA %s: %v", Subject(ca), err)
	}
	if sigErr != nil {
		return nil, sigErr
	}
	subjects := make([]string, len(cas))
	for i, ca := range cas {
		subjects[i] = Subject(ca)
	}
	return nil, fmt.Errorf("issued by %s, which is not in the ca bundle (trusted: %s): add that CA to ca, or use the CRL of a CA you trust",
		nameOf(l.Issuer.CommonName, l.Issuer.String()), strings.Join(subjects, ", "))
}

// Stale reports whether now is past the CRL's next update. A CRL without
// a next update never goes stale.
func (c *CRL) Stale(now time.Time) bool {
	return !c.List.NextUpdate.IsZero() && now.After(c.List.NextUpdate)
}

// covers reports whether c lists the revoked certificates of issuer.
func (c *CRL) covers(issuer *x509.Certificate) bool {
	return bytes.Equal(c.Issuer.RawSubject, issuer.RawSubject) &&
		bytes.Equal(c.Issuer.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo)
}

func (c *CRL) lookup(serial *big.Int) (x509.RevocationListEntry, bool) {
	if serial == nil {
		return x509.RevocationListEntry{}, false
	}
	e, ok := c.revoked[serial.Text(16)]
	return e, ok
}

// checkRevocation checks every certificate below the root of each verified
// chain against the CRLs of its issuer, and the leaf against OCSP when
// enabled. On a recheck of a live tunnel it reports only revocations, not
// a stale CRL or a silent responder.
func (c *Credentials) checkRevocation(m *Material, chains [][]*x509.Certificate, side Side, now time.Time, recheck bool) error {
	if err := c.checkPushed(chains); err != nil {
		return err
	}
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			cert, issuer := chain[i], chain[i+1]
			for _, crl := range m.CRLs {
				if !crl.covers(issuer) {
					continue
				}
				if e, ok := crl.lookup(cert.SerialNumber); ok {
					return &RevokedError{Cert: cert, Source: "CRL " + crl.Path, At: e.RevocationTime, Reason: e.ReasonCode}
				}
				if !recheck && m.Files.CRLStale != CRLStaleWarn && crl.Stale(now) {
					return &StaleCRLError{Cert: cert, CRL: crl, Now: now}
				}
			}
		}
		if mode := m.Files.OCSP; (mode == OCSPSoft || mode == OCSPHard) && len(chain) > 1 {
			if err := c.checkOCSP(chain[0], chain[1], side, mode, now, recheck); err != nil {
				return err
			}
		}
	}
	return nil
}

// RevokedError says a certificate in the peer's chain has been revoked.
type RevokedError struct {
	Cert   *x509.Certificate
	Source string // "CRL /etc/postern/ca.crl" or "OCSP responder http://…"
	At     time.Time
	Reason int // RFC 5280 reason code
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("certificate %s (serial %s) was revoked%s according to %s",
		Subject(e.Cert), serialHex(e.Cert), e.when(), e.Source)
}

func (e *RevokedError) when() string {
	s := ""
	if !e.At.IsZero() {
		s = " on " + e.At.UTC().Format(time.RFC3339)
	}
	if e.Reason != 0 {
		s += fmt.Sprintf(" (reason: %s)", pki.ReasonName(e.Reason))
	}
	return s
}

// StaleCRLError says the CRL that covers a peer certificate is past its
// next update and crl_stale is "refuse".
type StaleCRLError struct {
	Cert *x509.Certificate
	CRL  *CRL
	Now  time.Time
}

func (e *StaleCRLError) Error() string {
	return fmt.Sprintf("%s, so the revocation status of %s is unknown", e.CRL.staleText(e.Now), Subject(e.Cert))
}

// PinError says the peer's certificate matches none of the configured peer
// identities.
type PinError struct {
	Cert *x509.Certificate
	Pins []string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("certificate %s matches none of peer = [%s]", Subject(e.Cert), strings.Join(e.Pins, ", "))
}

func serialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return "?"
	}
	return c.SerialNumber.Text(16)
}

func nameOf(cn, full string) string {
	if cn != "" {
		return fmt.Sprintf("CN=%q", cn)
	}
	return full
}
