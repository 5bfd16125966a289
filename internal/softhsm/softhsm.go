// Package softhsm makes SoftHSM2 tokens for tests: a configuration and a
// token folder in the test's temporary directory, tokens initialised with
// softhsm2-util, and a PIN file. When SoftHSM2 is missing the test is
// skipped, or fails under CI=true.
package softhsm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/postern-tunnel/postern/hsm"
)

// PIN and SOPIN are the user and security-officer PINs of every test token.
const (
	PIN   = "1234"
	SOPIN = "5678"
)

// modules are where Debian's softhsm2 puts the module.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// HSM is a SoftHSM2 configuration with its tokens.
type HSM struct {
	Module  string // the PKCS#11 library
	PINFile string // holds PIN
	Dir     string
}

// New sets SOFTHSM2_CONF (so the test must not be parallel) to a fresh
// configuration and initialises one token per label, each with PIN. Every
// session is closed when the test ends.
func New(t *testing.T, labels ...string) *HSM {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: install Debian's softhsm2 (apt-get install softhsm2)", what)
		}
		t.Skipf("skipping: %s is missing (apt-get install softhsm2)", what)
	}
	if !hsm.Supported {
		if os.Getenv("CI") == "true" {
			t.Fatal("PKCS#11 tests need a build with cgo (CGO_ENABLED=1)")
		}
		t.Skip("skipping: PKCS#11 needs cgo and this test binary was built without it")
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		missing("softhsm2-util")
	}
	h := &HSM{Dir: t.TempDir()}
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			h.Module = m
			break
		}
	}
	if h.Module == "" {
		missing("libsofthsm2.so")
	}
	tokens := filepath.Join(h.Dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(h.Dir, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	h.PINFile = filepath.Join(h.Dir, "token.pin")
	if err := os.WriteFile(h.PINFile, []byte(PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hsm.CloseAll()
	t.Cleanup(hsm.CloseAll)
	for _, l := range labels {
		out, err := exec.Command(util, "--init-token", "--free", "--label", l, "--pin", PIN, "--so-pin", SOPIN).CombinedOutput()
		if err != nil {
			t.Fatalf("softhsm2-util --init-token %s: %v\n%s", l, err, out)
		}
	}
	return h
}

// URI names object in token with this HSM's module and PIN file.
func (h *HSM) URI(token, object string) string {
	return h.URIWithPIN(token, object, h.PINFile)
}

// URIWithPIN is URI with another PIN file.
func (h *HSM) URIWithPIN(token, object, pinFile string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s", token, object, h.Module, pinFile)
}

// WritePIN writes pin to a new file in the HSM's folder and returns its path.
func (h *HSM) WritePIN(t *testing.T, name, pin string) string {
	t.Helper()
	p := filepath.Join(h.Dir, name)
	if err := os.WriteFile(p, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
