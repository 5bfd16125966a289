package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/internal/testca"
)

func checkRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cmdCheck(args, &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return code, out.String()
}

func writeTOML(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "postern.toml")
	testca.WriteFile(t, path, []byte(text))
	return path
}

// TestCheckBrokenConfig: an expired certificate, a key that belongs to
// another certificate and a file that cannot be read are each named, and
// the exit status says something is wrong.
func TestCheckBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	expired := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"},
		NotBefore: time.Now().Add(-10 * 24 * time.Hour), NotAfter: time.Now().Add(-50 * time.Hour)}).Write(t, dir, "hub", ca)
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	stray := ca.Issue(t, testca.Options{CN: "stray"})
	testca.WriteFile(t, site.Key, stray.KeyPEM) // the site's key is not its certificate's
	path := writeTOML(t, dir, fmt.Sprintf(`
[tls]
ca = %q

[[server]]
listen = "127.0.0.1:7443"
cert = %q
key = %q

[[client]]
name = "hub"
servers = ["127.0.0.1:7443"]
cert = %q
key = %q
crl = ["missing.crl"]
`, expired.CA, expired.Cert, expired.Key, site.Cert, site.Key))

	code, out := checkRun(t, "-c", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"ERROR   cert " + expired.Cert + `: certificate CN="hub" expired 2d2h ago`,
		"ERROR   key " + site.Key + " does not match certificate " + site.Cert,
		"ERROR   crl " + filepath.Join(dir, "missing.crl") + ": cannot read: no such file or directory",
		`server 127.0.0.1:7443 (line 5):`,
		`client "hub" (line 10):`,
		"postern check: 3 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestCheckConnect: with --connect each tunnel is opened; one that works
// says whom it reached, one that fails says why in the agent's words.
func TestCheckConnect(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	hubAddr := startHub(t, dir, hubFiles)

	os.Chmod(site.Key, 0o644)
	path := writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = %q
key = %q
ca = %q

[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"

[[client]]
name = "misnamed"
servers = [%q]
server_name = "db.test"

[[client]]
name = "pinned"
servers = [%q]
server_name = "hub.test"
peer = ["cn:someone-else"]
`, site.Cert, site.Key, site.CA, hubAddr, hubAddr, hubAddr))

	code, out := checkRun(t, "-c", path, "--connect")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"tunnel hub:\n  ok      " + hubAddr + `: connected: server CN="hub"`,
		"TLS 1.3",
		"tunnel misnamed:\n  ERROR   " + hubAddr + `: server certificate CN="hub" is not valid for "db.test": it names DNS:hub.test`,
		"tunnel pinned:\n  ERROR   " + hubAddr + `: server certificate CN="hub" matches none of peer = [cn:someone-else]`,
		`chain: CN="site-a" ← CN="Test CA" (the last one from ca)`,
		"postern check: 2 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if runtime.GOOS != "windows" {
		if want := "WARNING key " + site.Key + ": readable by every user (mode 0644): chmod o-rwx " + site.Key; !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}

	// Fixed: nothing wrong, exit 0.
	// Group-readable is fine: the file's group is this process's own (as
	// root:postern 0640 is for the installed agent).
	os.Chmod(site.Key, 0o640)
	good := writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
`, site.Cert, site.Key, site.CA, hubAddr))
	if code, out := checkRun(t, "-c", good, "--connect"); code != 0 || !strings.Contains(out, "postern check: ok") || strings.Contains(out, "WARNING key") {
		t.Errorf("good config: exit %d\n%s", code, out)
	}
}

// TestCheckUsage: a missing -c is a usage error, a bad config a plain one.
func TestCheckUsage(t *testing.T) {
	if code, _ := checkRun(t, "extra"); code != 2 {
		t.Errorf("an argument: exit %d, want 2", code)
	}
	path := writeTOML(t, t.TempDir(), "name = 3\n")
	code, out := checkRun(t, "-c", path)
	if code != 1 || !strings.Contains(out, "ERROR   config "+path) {
		t.Errorf("bad config: exit %d\n%s", code, out)
	}
}

// startHub runs a hub agent in this process until the test ends and
// returns its tunnel address.
func startHub(t *testing.T, dir string, f testca.Files) string {
	t.Helper()
	text := fmt.Sprintf("name = \"hub\"\n[tls]\ncert = %q\nkey = %q\nca = %q\n[[server]]\nlisten = \"127.0.0.1:0\"\n", f.Cert, f.Key, f.CA)
	return startAgent(t, dir, text, io.Discard).ServerAddrs()[0].String()
}

// startAgent writes text to hub.toml in dir and runs an agent from it in this
// process, logging to w, until the test ends.
func startAgent(t *testing.T, dir, text string, w io.Writer) *agent.Agent {
	t.Helper()
	a, _ := runNamed(t, dir, "hub", text, w)
	return a
}
