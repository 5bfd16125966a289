package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testproxy"
)

// TestCheckConnectViaProxy: --connect reports the proxy hop of each
// server, then the tunnel behind it; a refusal by the proxy is named.
func TestCheckConnectViaProxy(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{Users: map[string]string{"svc": "right"}})
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	hubAddr := startHub(t, dir, hubFiles)
	right, wrong := filepath.Join(dir, "right.pass"), filepath.Join(dir, "wrong.pass")
	os.WriteFile(right, []byte("right\n"), 0o600)
	os.WriteFile(wrong, []byte("wrong\n"), 0o600)
	os.Chmod(wrong, 0o644)
	path := writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = %[1]q
key = %[2]q
ca = %[3]q

[[client]]
name = "hub"
servers = [%[4]q]
server_name = "hub.test"
proxy = "http://svc@%[5]s"
proxy_password_file = %[6]q

[[client]]
name = "badpass"
servers = [%[4]q]
server_name = "hub.test"
proxy = "http://svc@%[5]s"
proxy_password_file = %[7]q
`, site.Cert, site.Key, site.CA, hubAddr, squid.Addr, right, wrong))

	code, out := checkRun(t, "-c", path, "--connect")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"tunnel hub:\n  ok      " + hubAddr + ": via proxy http://svc@" + squid.Addr + ": ok\n  ok      " + hubAddr + `: connected: server CN="hub"`,
		"tunnel badpass:\n  ERROR   " + hubAddr + ": via proxy http://svc@" + squid.Addr + ": proxy " + squid.Addr +
			` answered 407 Proxy Authentication Required: check the user "svc" and proxy_password_file ` + wrong,
		"ok      proxy_password_file " + right + ": readable",
		"WARNING proxy_password_file " + wrong + ": readable by every user (mode 0644): chmod o-rwx " + wrong,
		"postern check: 1 error",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
