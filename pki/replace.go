package pki

import (
	"errors"
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
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		perm = fi.Mode().Perm()
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // created 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if fi != nil {
		keepOwner(f, fi)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
