package pki

import (
	"fmt"
	"math"
	"path/filepath"
)

// checkState refuses state files that parse but that the CA could not work
// with: a serial that is not hex as FormatSerial writes it, a revocation
// without a date or with a reason this CA does not issue, a CRL number with
// no successor. Left in, each would fail later (signing the CRL, looking a
// certificate up) with an error that does not say which file to fix.
func checkState(dir string, index []Record, revoked []Revocation, crlNumber int64) error {
	serial := func(file string, i int, s string) error {
		n, err := ParseSerial(s)
		if err != nil {
			return fmt.Errorf("%s: entry %d: %w (fix or restore the file from a backup)", filepath.Join(dir, file), i+1, err)
		}
		if FormatSerial(n) != s {
			return fmt.Errorf("%s: entry %d: serial %q must be written %q (fix or restore the file from a backup)", filepath.Join(dir, file), i+1, s, FormatSerial(n))
		}
		return nil
	}
	for i, r := range index {
		if err := serial(IndexFile, i, r.Serial); err != nil {
			return err
		}
	}
	for i, r := range revoked {
		if err := serial(RevokedFile, i, r.Serial); err != nil {
			return err
		}
		if r.RevokedAt.IsZero() {
			return fmt.Errorf("%s: entry %d (serial %s): no revoked_at date (fix or restore the file from a backup)", filepath.Join(dir, RevokedFile), i+1, r.Serial)
		}
		if !validReason(r.Reason) {
			return fmt.Errorf("%s: entry %d (serial %s): revocation reason %d is not one this CA issues (fix or restore the file from a backup)", filepath.Join(dir, RevokedFile), i+1, r.Serial, r.Reason)
		}
	}
	if crlNumber == math.MaxInt64 {
		return fmt.Errorf("%s: CRL number %d has no successor: this CA cannot sign another CRL", filepath.Join(dir, CRLNumberFile), crlNumber)
	}
	return nil
}
