package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/internal/softhsm"
	"github.com/postern-tunnel/postern/pki"
)

// TestTokenKeysEndToEnd: the hub's and the site's keys are made inside two
// SoftHSM2 tokens with `pki request --key pkcs11:...` (only the requests
// are written), signed by `pki sign`, and a hub agent and `check --connect`
// shake hands with them. check names a missing token, a wrong PIN and a
// missing object.
func TestTokenKeysEndToEnd(t *testing.T) {
	h := softhsm.New(t, "hub-token", "site-token")
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir, "--cn", "Partners CA")
	hubKey, siteKey := h.URI("hub-token", "hub"), h.URI("site-token", "site-a")

	out := pkiMust(t, "request", "--key", hubKey, "--cn", "hub", "--dns", "hub.test", "--out", filepath.Join(dir, "hub"))
	if !strings.Contains(out, `made a private key (ECDSA P-256) inside token "hub-token" (slot `) {
		t.Errorf("request said:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "hub.key")); !os.IsNotExist(err) {
		t.Errorf("a key file was written for a token key: %v", err)
	}
	pkiMust(t, "sign", "--dir", caDir, "--usage", "server", "--yes", filepath.Join(dir, "hub.csr"))
	ca := filepath.Join(caDir, pki.CertFile)

	hubText := fmt.Sprintf("name = \"hub\"\n[tls]\ncert = %q\nkey = %q\nca = %q\n[[server]]\nlisten = \"127.0.0.1:0\"\n",
		filepath.Join(dir, "hub.crt"), hubKey, ca)
	hubAddr := startAgent(t, dir, hubText, io.Discard).ServerAddrs()[0].String()

	site := func(key string) string {
		return writeTOML(t, dir, fmt.Sprintf("[tls]\ncert = %q\nkey = %q\nca = %q\n[[client]]\nname = \"hub\"\nservers = [%q]\nserver_name = \"hub.test\"\n",
			filepath.Join(dir, "site.crt"), key, ca, hubAddr))
	}
	// Errors first, before the site key exists: a PKCS#11 login holds for
	// the whole token, and `pki request` (another process in real life)
	// logged in to it here. The missing object is the site key itself.
	wrongPIN := h.WritePIN(t, "wrong.pin", "9999")
	for _, tc := range []struct{ name, key, want string }{
		{"token", h.URI("nosuch", "site-a"), `ERROR   key pkcs11:token=nosuch;object=site-a (postern.toml:3): token "nosuch" not found (tokens: "`},
		{"pin", h.URIWithPIN("site-token", "site-a", wrongPIN), `ERROR   key pkcs11:token=site-token;object=site-a (postern.toml:3): token "site-token": PIN rejected (CKR_PIN_INCORRECT): check pin-source ` + wrongPIN},
		{"object", siteKey, `ERROR   key pkcs11:token=site-token;object=site-a (postern.toml:3): no private key with label "site-a" in token "site-token" (slot `},
	} {
		code, out := checkRun(t, "-c", site(tc.key))
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output lacks %q:\n%s", tc.name, code, tc.want, out)
		}
		if tc.name == "token" && (!strings.Contains(out, `"hub-token" (slot `) || !strings.Contains(out, `"site-token" (slot `) || strings.Contains(out, `"" (slot`)) {
			t.Errorf("the tokens present are not listed as initialised tokens:\n%s", out)
		}
	}

	out = pkiMust(t, "request", "--pkcs11", siteKey, "--key-type", "rsa-2048", "--cn", "site-a", "--out", filepath.Join(dir, "site"))
	if !strings.Contains(out, `made a private key (RSA 2048) inside token "site-token"`) {
		t.Errorf("request said:\n%s", out)
	}
	if code, _, errOut := pkiRun(t, "", "request", "--key", siteKey, "--cn", "site-b", "--out", filepath.Join(dir, "site-b")); code == 0 ||
		!strings.Contains(errOut, `token "site-token" already holds a key with label "site-a"`) {
		t.Errorf("second key with the same label: exit %d: %s", code, errOut)
	}
	pkiMust(t, "sign", "--dir", caDir, "--usage", "client", "--yes", filepath.Join(dir, "site.csr"))

	code, out := checkRun(t, "-c", site(siteKey), "--connect")
	for _, want := range []string{
		`ok      key pkcs11:token=site-token;object=site-a: found RSA 2048 key in token "site-token" (slot `,
		`; key pkcs11:token=site-token;object=site-a matches`,
		"tunnel hub:\n  ok      " + hubAddr + `: connected: server CN="hub"`,
		"postern check: ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if code != 0 || t.Failed() {
		t.Errorf("exit %d, output:\n%s", code, out)
	}

	// Renewal keeps the key in the token: the new request has the same
	// public key and no key file appears.
	spkiLine := func(out string) string {
		i := strings.Index(out, "spki:")
		if i < 0 {
			t.Fatalf("no spki in:\n%s", out)
		}
		return strings.Fields(out[i:])[0]
	}
	before := spkiLine(pkiMust(t, "show", filepath.Join(dir, "site.csr")))
	out = pkiMust(t, "request", "--renew", "--key", siteKey, "--out", filepath.Join(dir, "site"))
	if !strings.Contains(out, `kept the private key (RSA 2048) inside token "site-token"`) || spkiLine(out) != before {
		t.Errorf("renewal: want the same key (%s):\n%s", before, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "site.key")); !os.IsNotExist(err) {
		t.Errorf("a key file was written for a token key: %v", err)
	}

	// A PIN file others can read is named.
	os.Chmod(h.PINFile, 0o644)
	if _, out := checkRun(t, "-c", site(siteKey)); !strings.Contains(out, "WARNING pin-source "+h.PINFile+": readable by every user (mode 0644)") {
		t.Errorf("a world-readable PIN file is not named:\n%s", out)
	}
}
