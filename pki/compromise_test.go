package pki_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

// TestSignRefusesCompromisedKey: once a certificate is revoked for key
// compromise, a request (or a renewal) for the same key is refused with the
// reason, even after the CA folder is opened again; other reasons do not
// bar the key.
func TestSignRefusesCompromisedKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := pki.Init(dir, pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, keyPEM, err := pki.NewRequest(pki.RequestOptions{Names: pki.Names{CommonName: "site-a"}})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.ParseRequestPEM(csrPEM)
	key, _ := pki.ParseKeyPEM(keyPEM)
	first, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	// Superseded does not bar the key: renewal with the same key goes on.
	second, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke(first.SerialNumber, pki.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient}); err != nil {
		t.Fatalf("after a superseded revocation: %v", err)
	}

	if err := ca.Revoke(second.SerialNumber, pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	ca, err = pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := identity.KeyHash(csr.PublicKey)
	wantStart := "key spki:" + spki[:16] + "…: the key was revoked for key compromise on "
	wantEnd := "(serial " + pki.FormatSerial(second.SerialNumber) + ", CN=site-a, see revoked.json): a compromised key is never certified again; make a new key (`postern pki request`, or `postern pki issue --renew --new-key`) and certify that"
	_, err = ca.Prepare(csr, pki.SignOptions{Usage: pki.UsageClient})
	if !errors.Is(err, pki.ErrKeyCompromised) || !strings.HasPrefix(err.Error(), wantStart) || !strings.HasSuffix(err.Error(), wantEnd) {
		t.Errorf("sign: %v\nwant %s … %s", err, wantStart, wantEnd)
	}
	_, _, err = ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "site-a"}, Usage: pki.UsageClient, Key: key})
	if !errors.Is(err, pki.ErrKeyCompromised) {
		t.Errorf("issue with the same key: %v", err)
	}
	// A new key is fine.
	if _, _, err := ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "site-a"}, Usage: pki.UsageClient}); err != nil {
		t.Errorf("issue with a new key: %v", err)
	}
}

// TestRevokeByCertificateRecordsKey: a certificate the index does not know
// (revoked by file) still bars its key.
func TestRevokeByCertificateRecordsKey(t *testing.T) {
	ca := newCA(t)
	csrPEM, _, _ := pki.NewRequest(pki.RequestOptions{Names: pki.Names{CommonName: "site-b"}})
	csr, _ := pki.ParseRequestPEM(csrPEM)
	cert, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.RevokeCertificate(cert, pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	spki, _ := identity.KeyHash(cert.PublicKey)
	if r := ca.Revoked(); len(r) != 1 || r[0].SPKI != spki {
		t.Errorf("revoked = %+v, want spki %s", r, spki)
	}
	if _, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrKeyCompromised) {
		t.Errorf("sign: %v", err)
	}
}
