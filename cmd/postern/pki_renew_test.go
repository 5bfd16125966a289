package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

func pkiCertAt(t *testing.T, path string) (serial, spki string) {
	t.Helper()
	c, err := pkiReadCert(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := identity.KeyHash(c.PublicKey)
	return pki.FormatSerial(c.SerialNumber), s
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestPKIIssueRenew: --renew replaces the certificate in place with the same
// key (same spki:, same names and usage, key file untouched, modes kept);
// --new-key replaces the key too.
func TestPKIIssueRenew(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "pki")
	hub := filepath.Join(t.TempDir(), "hub")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "issue", "--dir", caDir, "--usage", "server", "--cn", "hub", "--dns", "hub.example.com", "--out", hub)
	os.Chmod(hub+".key", 0o640)
	serial1, spki1 := pkiCertAt(t, hub+".crt")
	key1, _ := os.ReadFile(hub + ".key")

	out := pkiMust(t, "issue", "--dir", caDir, "--renew", "--out", hub, "--validity", "30d")
	serial2, spki2 := pkiCertAt(t, hub+".crt")
	key2, _ := os.ReadFile(hub + ".key")
	if serial2 == serial1 || spki2 != spki1 || string(key2) != string(key1) {
		t.Errorf("renew: serial %s → %s, spki %s → %s, key changed %v", serial1, serial2, spki1, spki2, string(key1) != string(key2))
	}
	for _, want := range []string{
		`renewed server certificate CN=hub, serial ` + serial2,
		hub + ".key",
		"tls.key: kept (spki: pins on it still match)",
		"dns:hub.example.com",
		"replaced serial " + serial1 + "; running agents pick the new files up at their next reload",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, hub+".key"); m != 0o640 {
			t.Errorf("key mode %04o, want 0640 kept", m)
		}
		if m := fileMode(t, hub+".crt"); m != 0o644 {
			t.Errorf("cert mode %04o, want 0644", m)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(hub), ".hub*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	out = pkiMust(t, "issue", "--dir", caDir, "--renew", "--new-key", "--out", hub)
	_, spki3 := pkiCertAt(t, hub+".crt")
	if spki3 == spki1 || !strings.Contains(out, "tls.key: replaced by a new key (spki: pins on the old one no longer match)") {
		t.Errorf("--new-key: spki %s → %s\n%s", spki1, spki3, out)
	}
	if key, err := pkiReadKey(hub + ".key"); err != nil {
		t.Error(err)
	} else if c, _ := pkiReadCert(hub + ".crt"); !pkiSameKey(key.Public(), c.PublicKey) {
		t.Error("--new-key: the new certificate is not for the new key")
	}
	if runtime.GOOS != "windows" && fileMode(t, hub+".key") != 0o640 {
		t.Errorf("key mode not kept with --new-key")
	}
}

func TestPKIRenewRefuses(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "pki")
	dir := t.TempDir()
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "issue", "--dir", caDir, "--usage", "client", "--cn", "a", "--out", filepath.Join(dir, "a"))
	pkiMust(t, "issue", "--dir", caDir, "--usage", "client", "--cn", "b", "--out", filepath.Join(dir, "b"))
	// b's key with a's certificate.
	bKey, _ := os.ReadFile(filepath.Join(dir, "b.key"))
	os.WriteFile(filepath.Join(dir, "a.key"), bKey, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"nothing to renew", []string{"issue", "--dir", caDir, "--renew", "--out", filepath.Join(dir, "none")}, 1,
			"postern pki issue: --renew replaces an existing certificate, and " + filepath.Join(dir, "none.crt") + " cannot be read: no such file or directory; to make a first one, leave out --renew"},
		{"key of another certificate", []string{"issue", "--dir", caDir, "--renew", "--out", filepath.Join(dir, "a")}, 1,
			"postern pki issue: key " + filepath.Join(dir, "a.key") + " does not belong to certificate " + filepath.Join(dir, "a.crt") + ": renew with the certificate's own key, or add --new-key"},
		{"--new-key alone", []string{"issue", "--dir", caDir, "--usage", "client", "--cn", "c", "--new-key"}, 2,
			"postern pki issue: --new-key goes with --renew: without --renew every issue makes a new key"},
	} {
		code, _, errOut := pkiRun(t, "", tc.args...)
		first, _, _ := strings.Cut(errOut, "\n")
		if runtime.GOOS == "windows" {
			first = strings.Replace(first, "The system cannot find the file specified.", "no such file or directory", 1)
		}
		if code != tc.code || first != tc.want {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit %d and\n%s", tc.name, code, errOut, tc.code, tc.want)
		}
	}
}

// TestPKIRequestRenew: the partner renews with the same key; the CA signs
// over the old certificate only with --renew; a key revoked for key
// compromise is refused at sign with the reason.
func TestPKIRequestRenew(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "pki")
	partner := filepath.Join(t.TempDir(), "site-b")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "request", "--cn", "site-b", "--out", partner)
	pkiMust(t, "sign", "--dir", caDir, "--usage", "client", "--yes", partner+".csr")
	serial1, spki1 := pkiCertAt(t, partner+".crt")
	key1, _ := os.ReadFile(partner + ".key")

	code, _, errOut := pkiRun(t, "", "request", "--cn", "site-b", "--out", partner)
	if want := "already exists: remove it or choose another --out; to renew with the same key: postern pki request --renew --out " + partner; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("request over files: exit %d\n%s\nwant %q", code, errOut, want)
	}

	out := pkiMust(t, "request", "--renew", "--out", partner)
	if want := "the signed certificate must show spki:" + spki1 + ", as the old one did"; !strings.Contains(out, want) {
		t.Errorf("request --renew:\n%s\nwant %q", out, want)
	}
	if key2, _ := os.ReadFile(partner + ".key"); string(key2) != string(key1) {
		t.Error("request --renew changed the key")
	}

	code, _, errOut = pkiRun(t, "", "sign", "--dir", caDir, "--usage", "client", "--yes", partner+".csr")
	if want := "postern pki sign: " + partner + ".crt already exists: remove it or choose another --out; for a renewal, add --renew to replace it"; code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("sign over a certificate: exit %d\n%s\nwant %q", code, errOut, want)
	}
	pkiMust(t, "sign", "--dir", caDir, "--usage", "client", "--yes", "--renew", partner+".csr")
	serial2, spki2 := pkiCertAt(t, partner+".crt")
	if serial2 == serial1 || spki2 != spki1 {
		t.Errorf("renewed: serial %s → %s, spki %s → %s", serial1, serial2, spki1, spki2)
	}

	// The key is stolen: revoke for key compromise; the same CSR is refused.
	pkiMust(t, "revoke", "--dir", caDir, "--reason", "key-compromise", serial2)
	code, _, errOut = pkiRun(t, "", "sign", "--dir", caDir, "--usage", "client", "--yes", "--renew", partner+".csr")
	want := "postern pki sign: " + partner + ".csr: key spki:" + spki1[:16] + "…: the key was revoked for key compromise on "
	if code != 1 || !strings.HasPrefix(errOut, want) || !strings.Contains(errOut, "a compromised key is never certified again; make a new key") {
		t.Errorf("sign a compromised key: exit %d\n%s\nwant %q", code, errOut, want)
	}
}
