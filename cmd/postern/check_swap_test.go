package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/internal/testca"
)

// TestCheckSwappedCertAndKey: cert and key written the wrong way round are
// named as such, with the lines of [tls] that set them, and the certificate
// file's ordinary 0644 mode draws no key-permission warning.
func TestCheckSwappedCertAndKey(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	os.Chmod(site.Cert, 0o644)
	path := writeTOML(t, dir, fmt.Sprintf(`name = "site-a"
[tls]
cert = %q
key = %q
ca = %q

[[client]]
name = "hub"
servers = ["127.0.0.1:7443"]
`, site.Key, site.Cert, site.CA))
	code, out := checkRun(t, "-c", path)
	want := fmt.Sprintf("ERROR   cert = %s (postern.toml:3) holds a private key and key = %s (postern.toml:4) holds a certificate: swap them", site.Key, site.Cert)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, want)
	}
	if strings.Contains(out, "WARNING key") || strings.Contains(out, "chmod") {
		t.Errorf("a certificate file's mode is reported as a key problem:\n%s", out)
	}

	// Set in the [[client]] itself: that table's lines are named.
	path = writeTOML(t, dir, fmt.Sprintf(`[tls]
ca = %q

[[client]]
name = "hub"
servers = ["127.0.0.1:7443"]
key = %q
cert = %q
`, site.CA, site.Cert, site.Key))
	_, out = checkRun(t, "-c", path)
	if want := "(postern.toml:8) holds a private key and key = " + site.Cert + " (postern.toml:7)"; !strings.Contains(out, want) {
		t.Errorf("output:\n%s\nwant %q", out, want)
	}
}

// TestUnwrapOpError: a refused dial reads "connect: connection refused",
// not "connect: connect: connection refused".
func TestUnwrapOpError(t *testing.T) {
	err := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if got := fmt.Errorf("connect: %w", client.UnwrapOp(err)).Error(); got != "connect: connection refused" {
		t.Errorf("got %q", got)
	}
}

// TestRunSwappedCertAndKey: `postern run` says the same as check, with the
// lines of [tls] that set the two paths.
func TestRunSwappedCertAndKey(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	path := writeTOML(t, dir, fmt.Sprintf(`[tls]
cert = %q
key = %q
ca = %q

[[client]]
name = "hub"
servers = ["127.0.0.1:7443"]
`, site.Key, site.Cert, site.CA))
	err := runAgent(context.Background(), path, io.Discard, func(*agent.Agent) {})
	want := fmt.Sprintf("cert = %s holds a private key and key = %s holds a certificate: swap them (cert set at postern.toml:2, key at postern.toml:3)", site.Key, site.Cert)
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("got %v\nwant it to end in %s", err, want)
	}
}
