package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"slices"
	"testing"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
)

// FuzzParseUpdate: an announcement that parses has a signature of the
// declared length and 1..8 certificates, and encodes back to itself.
func FuzzParseUpdate(f *testing.F) {
	ca := testca.New(f, "Fuzz CA")
	leaf := ca.Issue(f, testca.Options{CN: "a", KeyType: testca.Ed25519})
	f.Add(append([]byte{0, 3, 1, 2, 3}, leaf.CertPEM...))
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 9, 1})
	f.Add(append([]byte{0, 0}, "-----BEGIN KEY-----\nAA==\n-----END KEY-----\n"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		sig, chain, err := parseUpdate(data)
		if err != nil {
			return
		}
		if len(chain) == 0 || len(chain) > maxUpdateChain || len(sig) != int(binary.BigEndian.Uint16(data)) {
			t.Fatalf("accepted %d certificates, signature %d bytes", len(chain), len(sig))
		}
		again := binary.BigEndian.AppendUint16(nil, uint16(len(sig)))
		again = append(again, sig...)
		for _, c := range chain {
			again = append(again, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		sig2, chain2, err := parseUpdate(again)
		if err != nil || !bytes.Equal(sig, sig2) || len(chain2) != len(chain) || !chain2[0].Equal(chain[0]) {
			t.Fatalf("re-encoded announcement: %v", err)
		}
	})
}

// FuzzCheckRenewed: a renewal answer is taken only for the key the agent
// made, with exactly the old certificate's identities and issuer.
func FuzzCheckRenewed(f *testing.F) {
	ca := testca.New(f, "Fuzz CA")
	old := ca.Issue(f, testca.Options{CN: "site", DNS: []string{"site.test"}, KeyType: testca.Ed25519})
	fresh := ca.Issue(f, testca.Options{CN: "site", DNS: []string{"site.test"}, KeyType: testca.Ed25519})
	other := ca.Issue(f, testca.Options{CN: "other", KeyType: testca.Ed25519, Key: fresh.Key})
	f.Add(fresh.CertPEM)
	f.Add(other.CertPEM)
	f.Add(old.CertPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := checkRenewed(data, old.Cert, fresh.Key.Public())
		if err != nil {
			return
		}
		if !bytes.Equal(got.RawSubjectPublicKeyInfo, fresh.Cert.RawSubjectPublicKeyInfo) ||
			!slices.Equal(identity.NameIdentities(got), identity.NameIdentities(old.Cert)) ||
			!bytes.Equal(got.RawIssuer, old.Cert.RawIssuer) {
			t.Fatalf("took a certificate for another key, identity or issuer: %s", identity.Describe(got))
		}
	})
}
