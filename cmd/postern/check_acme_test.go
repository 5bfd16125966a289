package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
)

// TestCheckACMEPending: before the first start, the certificate [acme]
// will obtain does not exist yet; check says so as a note, not an error.
func TestCheckACMEPending(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	ca.Issue(t, testca.Options{CN: "x"}).Write(t, dir, "partners", ca)
	path := writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = "acme/cert.pem"
key = "acme/key.pem"
ca = %q
[acme]
directory = "https://acme.example/dir"
domains = ["hub.example.com"]
http_listen = "127.0.0.1:0"
[[server]]
listen = "127.0.0.1:0"
`, filepath.Join(dir, "partners-ca.crt")))
	code, out := checkRun(t, "-c", path)
	want := "cert " + filepath.Join(dir, "acme", "cert.pem") + ": not obtained yet; [acme] obtains it from https://acme.example/dir for hub.example.com when the agent starts"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("check: exit %d\n%s\nwant exit 0 and %q", code, out, want)
	}
}
