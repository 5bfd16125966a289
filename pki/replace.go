package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ReplaceFile writes data to path atomically: a temporary file in the same
// folder, synced, then renamed over path, so a reader (an agent reloading
// its certificate) sees the old file or the new one, never half of one.
// An existing file's mode (and, where the OS allows, its owner and group)
// is kept; a new file gets perm.
func ReplaceFile(path string, data []byte, perm fs.FileMode) error {
	perm, old, err := replacing(path, perm)
	if err != nil {
		return err
	}
	return writeAtomic(path, data, perm, old)
}

// replacing prepares to replace path: its folder exists, and perm is the
// mode of the file there (whose info is old), or the given one when there
// is none yet.
func replacing(path string, perm fs.FileMode) (fs.FileMode, fs.FileInfo, error) {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, nil, err
		}
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		return fi.Mode().Perm(), fi, nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, nil, err
	}
	return perm, nil, nil
}

// ReplacePair replaces a private key and its certificate so that, as far
// as a file system allows, both change or neither does; each file alone
// is replaced as ReplaceFile does (mode, owner and group kept; new files
// get 0600 and 0644). The new key, the new certificate and a copy of the
// old key are first written to temporary files in their folders, where a
// full disk or a folder's permissions stop a write; only then are the key
// and the certificate renamed into place, and when the certificate's
// rename fails the old key is renamed back. Between the two renames a
// reader sees the new key with the old certificate: an agent's reload
// refuses that pair and keeps the one in use.
//
// The error says whether the old pair is still in place.
func ReplacePair(keyPath string, keyPEM []byte, certPath string, certPEM []byte) error {
	var staged []string
	defer func() {
		for _, tmp := range staged {
			os.Remove(tmp) // fails harmlessly after a rename
		}
	}()
	stage := func(path string, data []byte, perm fs.FileMode, old fs.FileInfo) (string, error) {
		tmp, err := stageFile(path, data, perm, old)
		if err == nil {
			staged = append(staged, tmp)
		}
		return tmp, err
	}
	unchanged := fmt.Sprintf("nothing was replaced: %s and %s are the old pair", keyPath, certPath)

	keyPerm, oldKey, err := replacing(keyPath, 0o600)
	if err != nil {
		return fmt.Errorf("write key %s: %w (%s)", keyPath, err, unchanged)
	}
	var oldKeyPEM []byte
	if oldKey != nil {
		if oldKeyPEM, err = os.ReadFile(keyPath); err != nil {
			return fmt.Errorf("read key %s: %w (%s)", keyPath, err, unchanged)
		}
	}
	keyTmp, err := stage(keyPath, keyPEM, keyPerm, oldKey)
	if err != nil {
		return fmt.Errorf("write key %s: %w (%s)", keyPath, err, unchanged)
	}
	var backup string
	if oldKey != nil {
		if backup, err = stage(keyPath, oldKeyPEM, keyPerm, oldKey); err != nil {
			return fmt.Errorf("copy key %s: %w (%s)", keyPath, err, unchanged)
		}
	}
	certPerm, oldCert, err := replacing(certPath, 0o644)
	if err != nil {
		return fmt.Errorf("write certificate %s: %w (%s)", certPath, err, unchanged)
	}
	certTmp, err := stage(certPath, certPEM, certPerm, oldCert)
	if err != nil {
		return fmt.Errorf("write certificate %s: %w (%s)", certPath, err, unchanged)
	}

	if err := os.Rename(keyTmp, keyPath); err != nil {
		return fmt.Errorf("replace key %s: %w (%s)", keyPath, err, unchanged)
	}
	if err := os.Rename(certTmp, certPath); err != nil {
		return restoreKey(keyPath, backup, certPath, fmt.Errorf("replace certificate %s: %w", certPath, err))
	}
	return nil
}

// restoreKey undoes ReplacePair's rename of the key after the
// certificate's failed with err: the copy of the old key in backup goes
// back, or without one (there was no key) the new key goes.
func restoreKey(keyPath, backup, certPath string, err error) error {
	if backup == "" {
		if rerr := os.Remove(keyPath); rerr != nil {
			return fmt.Errorf("%w; and the new key %s could not be removed again (%v): it does not match %s", err, keyPath, rerr, certPath)
		}
		return fmt.Errorf("%w (the new key is removed again: nothing was replaced)", err)
	}
	if rerr := os.Rename(backup, keyPath); rerr != nil {
		return fmt.Errorf("%w; and the old key could not be put back (%v): %s holds the new key, %s the old certificate, which do not match", err, rerr, keyPath, certPath)
	}
	return fmt.Errorf("%w (the old key is back: %s and %s are the old pair)", err, keyPath, certPath)
}
