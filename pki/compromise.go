package pki

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/identity"
)

// ErrKeyCompromised is returned when the CA is asked to certify a public key
// it revoked a certificate of for key compromise.
var ErrKeyCompromised = errors.New("the key was revoked for key compromise")

// checkKeyNotCompromised refuses pub when a certificate this CA signed for
// the same key (same spki:) was revoked with reason key-compromise: a new
// certificate would put the stolen key back in service.
func (ca *CA) checkKeyNotCompromised(pub crypto.PublicKey) error {
	fp, err := identity.KeyHash(pub)
	if err != nil {
		return nil // checkPublicKey reports unusable keys
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, r := range ca.revoked {
		if r.Reason != ReasonKeyCompromise {
			continue
		}
		if r.SPKI != fp && !ca.issuedFor(r.Serial, fp) {
			continue
		}
		subject := r.Subject
		if subject == "" {
			subject = "no subject recorded"
		}
		return fmt.Errorf("key spki:%s: %w on %s (serial %s, %s, see %s): a compromised key is never certified again; make a new key (`postern pki request`, or `postern pki issue --renew --new-key`) and certify that",
			shortHex(fp), ErrKeyCompromised, r.RevokedAt.UTC().Format(time.RFC3339), r.Serial, subject, RevokedFile)
	}
	return nil
}

// issuedFor reports whether the index records serial with public key fp.
// The caller holds ca.mu.
func (ca *CA) issuedFor(serial, fp string) bool {
	for _, rec := range ca.index {
		if rec.Serial == serial && slices.Contains(rec.Identities, "spki:"+fp) {
			return true
		}
	}
	return false
}

// spkiOfRecord returns the spki: fingerprint the index holds for serial, or
// "". The caller holds ca.mu.
func (ca *CA) spkiOfRecord(serial string) string {
	for _, rec := range ca.index {
		if rec.Serial != serial {
			continue
		}
		for _, id := range rec.Identities {
			if fp, ok := strings.CutPrefix(id, "spki:"); ok {
				return fp
			}
		}
	}
	return ""
}

func shortHex(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}
