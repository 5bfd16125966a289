//go:build linux

package main

import (
	"bytes"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPKIRenewNewKeyKeepsPair: `pki issue --renew --new-key` whose
// certificate cannot be put in place leaves the old key and the old
// certificate, a pair that still matches, and says so. Before, the new
// key was in place by then, beside the old certificate, and an agent
// restarted on them would not start.
//
// The certificate is made immutable (chattr +i): renaming a file over it
// fails, even for root, while the key beside it is replaced as usual.
func TestPKIRenewNewKeyKeepsPair(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "pki")
	hub := filepath.Join(t.TempDir(), "hub")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "issue", "--dir", caDir, "--usage", "server", "--cn", "hub", "--dns", "hub.example.com", "--out", hub)
	oldKey, _ := os.ReadFile(hub + ".key")
	oldCert, _ := os.ReadFile(hub + ".crt")

	if out, err := exec.Command("chattr", "+i", hub+".crt").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" { // .ci/run runs as root and installs chattr
			t.Fatalf("chattr +i: %v: %s", err, out)
		}
		t.Skipf("cannot make the certificate immutable here, so its replacement cannot be made to fail (chattr needs root and a file system with the flag): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", hub+".crt").Run() })

	code, _, errOut := pkiRun(t, "", "issue", "--dir", caDir, "--renew", "--new-key", "--out", hub)
	if code != 1 || !strings.Contains(errOut, "operation not permitted") || !strings.Contains(errOut, hub+".crt") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 naming %s and the cause", code, errOut, hub+".crt")
	}
	gotKey, _ := os.ReadFile(hub + ".key")
	gotCert, _ := os.ReadFile(hub + ".crt")
	if !bytes.Equal(gotCert, oldCert) {
		t.Error("the certificate on disk changed")
	}
	if !bytes.Equal(gotKey, oldKey) {
		t.Error("the key on disk is not the old key: it was replaced though the certificate could not follow")
	}
	if _, err := tls.X509KeyPair(gotCert, gotKey); err != nil {
		t.Errorf("the key and certificate on disk do not match (an agent would not start on them): %v", err)
	}
	if !strings.Contains(errOut, "old pair") {
		t.Errorf("stderr does not say the old pair is in place:\n%s", errOut)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(hub), ".hub*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
