package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/identity"
)

// CRL reason codes (RFC 5280, section 5.3.1) that Revoke accepts.
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonPrivilegeWithdrawn   = 9
)

// reasonNames are the RFC 5280 CRL reason codes; this CA revokes with the
// ones marked issuable, and names all of them in CRLs it reads.
var reasonNames = []struct {
	code     int
	name     string
	issuable bool
}{
	{ReasonUnspecified, "unspecified", true},
	{ReasonKeyCompromise, "key-compromise", true},
	{ReasonCACompromise, "ca-compromise", true},
	{ReasonAffiliationChanged, "affiliation-changed", true},
	{ReasonSuperseded, "superseded", true},
	{ReasonCessationOfOperation, "cessation-of-operation", true},
	{6, "certificate-hold", false},
	{8, "remove-from-crl", false},
	{ReasonPrivilegeWithdrawn, "privilege-withdrawn", true},
	{10, "aa-compromise", false},
}

// ParseReason accepts a reason name ("key-compromise"; case, '-' and '_'
// do not matter, so keyCompromise works too) or its RFC 5280 number.
func ParseReason(s string) (int, error) {
	norm := func(x string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(x))
	}
	for _, r := range reasonNames {
		if r.issuable && (norm(s) == norm(r.name) || s == strconv.Itoa(r.code)) {
			return r.code, nil
		}
	}
	var names []string
	for _, r := range reasonNames {
		if r.issuable {
			names = append(names, r.name)
		}
	}
	return 0, fmt.Errorf("unknown revocation reason %q: use one of %s", s, strings.Join(names, ", "))
}

func validReason(code int) bool {
	for _, r := range reasonNames {
		if r.code == code {
			return r.issuable
		}
	}
	return false
}

// ReasonName names an RFC 5280 reason code as ParseReason reads it.
func ReasonName(code int) string {
	for _, r := range reasonNames {
		if r.code == code {
			return r.name
		}
	}
	return fmt.Sprintf("reason %d", code)
}

// Errors from Revoke that callers branch on.
var (
	ErrAlreadyRevoked = errors.New("already revoked")
	ErrUnknownSerial  = errors.New("not issued by this CA")
)

// Revoke records that the certificate with this serial is revoked. The serial
// must be in the index; for a certificate the index does not know, use
// RevokeCertificate. Revoke does not publish anything: call CRL afterwards.
func (ca *CA) Revoke(serial *big.Int, reason int) error {
	rec, ok := ca.Lookup(serial)
	if !ok {
		return fmt.Errorf("serial %s: %w (it is not in %s; check it with `postern pki show CERT`, or revoke by certificate file)", FormatSerial(serial), ErrUnknownSerial, IndexFile)
	}
	return ca.revoke(serial, reason, rec.Subject, "")
}

// RevokeCertificate revokes cert after checking that this CA signed it.
func (ca *CA) RevokeCertificate(cert *x509.Certificate, reason int) error {
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return fmt.Errorf("certificate %s (serial %s, issuer %s): %w: %v", cert.Subject, FormatSerial(cert.SerialNumber), cert.Issuer, ErrUnknownSerial, err)
	}
	return ca.revoke(cert.SerialNumber, reason, cert.Subject.String(), identity.SPKIHash(cert))
}

// revoke records the revocation; spki is the key's fingerprint when the
// caller has the certificate, otherwise the index's record supplies it.
func (ca *CA) revoke(serial *big.Int, reason int, subject, spki string) error {
	if !validReason(reason) {
		return fmt.Errorf("revocation reason %d is not supported", reason)
	}
	s := FormatSerial(serial)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.update(func() error {
		for _, r := range ca.revoked {
			if r.Serial == s {
				return fmt.Errorf("serial %s (%s): %w on %s", s, r.Subject, ErrAlreadyRevoked, r.RevokedAt.UTC().Format(time.RFC3339))
			}
		}
		if spki == "" {
			spki = ca.spkiOfRecord(s)
		}
		ca.revoked = append(ca.revoked, Revocation{Serial: s, RevokedAt: ca.now().UTC().Truncate(time.Second), Reason: reason, Subject: subject, SPKI: spki})
		if err := ca.saveRevoked(); err != nil {
			ca.revoked = ca.revoked[:len(ca.revoked)-1]
			return fmt.Errorf("record revocation of %s in %s: %w", s, RevokedFile, err)
		}
		return nil
	})
}

// CRL signs a new certificate revocation list of every revoked serial, valid
// for validity (0 means DefaultCRLValidity), with a CRL number one above the
// last. It writes ca.crl when the CA has a folder, and returns the CRL as PEM.
func (ca *CA) CRL(validity time.Duration) ([]byte, error) {
	if validity == 0 {
		validity = DefaultCRLValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("CRL validity %v is negative", validity)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var out []byte
	err := ca.update(func() error {
		now := ca.now()
		tmpl := &x509.RevocationList{
			Number:     big.NewInt(ca.crlNumber + 1),
			ThisUpdate: now.Add(-ClockSkew),
			NextUpdate: now.Add(validity),
		}
		for _, r := range ca.revoked {
			n, ok := new(big.Int).SetString(r.Serial, 16)
			if !ok {
				return fmt.Errorf("%s: serial %q is not hex: fix the file", RevokedFile, r.Serial)
			}
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
				SerialNumber:   n,
				RevocationTime: r.RevokedAt,
				ReasonCode:     r.Reason,
			})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
		if err != nil {
			return fmt.Errorf("sign CRL: %w", err)
		}
		out = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
		if ca.Dir != "" {
			// The number first: a number skipped after a failure is harmless, a
			// number used twice is not.
			num := strconv.FormatInt(ca.crlNumber+1, 10) + "\n"
			if err := writeFileAtomic(filepath.Join(ca.Dir, CRLNumberFile), []byte(num), 0o644); err != nil {
				return err
			}
			ca.crlNumber++
			if err := writeFileAtomic(filepath.Join(ca.Dir, CRLFile), out, 0o644); err != nil {
				return err
			}
		} else {
			ca.crlNumber++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ParseCRLPEM reads the first CRL in PEM data.
func ParseCRLPEM(data []byte) (*x509.RevocationList, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM CRL found")
		}
		if block.Type == "X509 CRL" {
			return x509.ParseRevocationList(block.Bytes)
		}
	}
}
