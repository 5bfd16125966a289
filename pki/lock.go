package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file in a CA folder that processes lock while they change
// the CA's state: a running hub signing an enrollment or a renewal and an
// operator's `postern pki issue` or `pki revoke` at the same moment must not
// lose each other's records.
const LockFile = ".lock"

// update runs change with the CA folder locked against other processes and
// the in-memory state (index, revocations, CRL number) re-read from disk
// first, so what change saves includes what others wrote since Open. The
// caller holds ca.mu. A CA without a folder just runs change.
func (ca *CA) update(change func() error) error {
	if ca.Dir == "" {
		return change()
	}
	f, err := os.OpenFile(filepath.Join(ca.Dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock CA folder %s: %w", ca.Dir, err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("lock CA folder %s: %w", ca.Dir, err)
	}
	defer unlockFile(f)
	if err := ca.syncState(); err != nil {
		return err
	}
	return change()
}

// syncState re-reads index.json, revoked.json and the CRL number.
func (ca *CA) syncState() error {
	index, revoked, number, err := readState(ca.Dir)
	if err != nil {
		return err
	}
	ca.index, ca.revoked, ca.crlNumber = index, revoked, number
	return nil
}

func readState(dir string) ([]Record, []Revocation, int64, error) {
	var idx indexFile
	if err := readJSON(filepath.Join(dir, IndexFile), &idx); err != nil {
		return nil, nil, 0, err
	}
	var rev revokedFile
	if err := readJSON(filepath.Join(dir, RevokedFile), &rev); err != nil {
		return nil, nil, 0, err
	}
	var number int64
	n, err := os.ReadFile(filepath.Join(dir, CRLNumberFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, 0, err
	}
	if err == nil {
		number, err = strconv.ParseInt(strings.TrimSpace(string(n)), 10, 64)
		if err != nil || number < 0 {
			return nil, nil, 0, fmt.Errorf("%s: %q is not a CRL number: it should hold the number of the last CRL, in decimal", filepath.Join(dir, CRLNumberFile), n)
		}
	}
	if err := checkState(dir, idx.Certificates, rev.Revoked, number); err != nil {
		return nil, nil, 0, err
	}
	return idx.Certificates, rev.Revoked, number, nil
}
