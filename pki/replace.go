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
	return writeAtomic(path, data, perm, fi)
}
