//go:build unix

package pki

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// pairFiles writes an old key (mode 0640, owner 4242:4243 as a packaged
// key is root:postern) and an old certificate in dir.
func pairFiles(t *testing.T, dir, certName string) (key, cert string) {
	t.Helper()
	key, cert = filepath.Join(dir, "site.key"), filepath.Join(dir, certName)
	if err := os.WriteFile(key, []byte("old key"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, []byte("old cert"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(key, 4242, 4243); err != nil {
			t.Fatal(err)
		}
	}
	return key, cert
}

// checkFile asserts path holds data with mode perm (and, as root, the
// owner pairFiles gave the key).
func checkFile(t *testing.T, path, data string, perm os.FileMode, owned bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != data {
		t.Errorf("%s holds %q (%v), want %q", filepath.Base(path), b, err, data)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), fi.Mode().Perm(), perm)
	}
	if st := fi.Sys().(*syscall.Stat_t); owned && os.Getuid() == 0 && (st.Uid != 4242 || st.Gid != 4243) {
		t.Errorf("%s: owner %d:%d, want 4242:4243 kept", filepath.Base(path), st.Uid, st.Gid)
	}
}

func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// TestReplacePair: key and certificate change together, modes and owner
// kept; when the certificate cannot be written or renamed, the old pair
// is what is on disk, and the error says so.
func TestReplacePair(t *testing.T) {
	t.Run("both", func(t *testing.T) {
		dir := t.TempDir()
		key, cert := pairFiles(t, dir, "site.crt")
		if err := ReplacePair(key, []byte("new key"), cert, []byte("new cert")); err != nil {
			t.Fatal(err)
		}
		checkFile(t, key, "new key", 0o640, true)
		checkFile(t, cert, "new cert", 0o644, false)
		noTemporaries(t, dir)
	})
	t.Run("new files", func(t *testing.T) {
		dir := t.TempDir()
		key, cert := filepath.Join(dir, "certs", "site.key"), filepath.Join(dir, "certs", "site.crt")
		if err := ReplacePair(key, []byte("new key"), cert, []byte("new cert")); err != nil {
			t.Fatal(err)
		}
		checkFile(t, key, "new key", 0o600, false)
		checkFile(t, cert, "new cert", 0o644, false)
	})
	t.Run("certificate not written", func(t *testing.T) {
		// A name of 254 bytes: the temporary file beside it would be
		// longer than a name may be, so it cannot be created (as root too).
		dir := t.TempDir()
		key, cert := pairFiles(t, dir, strings.Repeat("c", 250)+".crt")
		err := ReplacePair(key, []byte("new key"), cert, []byte("new cert"))
		if err == nil || !strings.Contains(err.Error(), "write certificate "+cert) || !strings.Contains(err.Error(), "nothing was replaced: "+key+" and "+cert+" are the old pair") {
			t.Fatalf("err = %v", err)
		}
		checkFile(t, key, "old key", 0o640, true)
		checkFile(t, cert, "old cert", 0o644, false)
		noTemporaries(t, dir)
	})
	t.Run("certificate not renamed", func(t *testing.T) {
		// A folder in the certificate's place: its new file is written,
		// but cannot be renamed over it (as root too). The key is by then.
		dir := t.TempDir()
		key, _ := pairFiles(t, dir, "site.crt")
		cert := filepath.Join(dir, "site.crt.d")
		if err := os.MkdirAll(filepath.Join(cert, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := ReplacePair(key, []byte("new key"), cert, []byte("new cert"))
		if err == nil || !strings.Contains(err.Error(), "replace certificate "+cert) || !strings.Contains(err.Error(), "the old key is back: "+key+" and "+cert+" are the old pair") {
			t.Fatalf("err = %v", err)
		}
		checkFile(t, key, "old key", 0o640, true)
		noTemporaries(t, dir)

		// Without an old key, the new one goes again.
		os.Remove(key)
		err = ReplacePair(key, []byte("new key"), cert, []byte("new cert"))
		if err == nil || !strings.Contains(err.Error(), "the new key is removed again") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(key); !os.IsNotExist(err) {
			t.Errorf("the new key stayed without its certificate: %v", err)
		}
		noTemporaries(t, dir)
	})
}
