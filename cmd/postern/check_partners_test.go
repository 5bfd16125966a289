package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
)

// TestCheckUnscopedWithTwoCAs: `postern check` refuses what `postern run`
// refuses: a name in allow that does not say which of two trusted CAs
// must have issued it. The line names the entry and gives the fix.
func TestCheckUnscopedWithTwoCAs(t *testing.T) {
	dir := t.TempDir()
	caA, caB := testca.New(t, "Partner A CA"), testca.New(t, "Partner B CA")
	hub := caA.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", caA)
	both := filepath.Join(dir, "partners.crt")
	testca.WriteFile(t, both, append(append([]byte{}, caA.PEM...), caB.PEM...))
	fpA, fpB := identity.Fingerprint(caA.Cert), identity.Fingerprint(caB.Cert)
	toml := func(allow string) string {
		return fmt.Sprintf(`[tls]
cert = %q
key = %q
ca = %q

[[server]]
listen = "127.0.0.1:7443"

[[service]]
name = "erp"
target = "127.0.0.1:5432"
allow = [%q]
`, hub.Cert, hub.Key, both, allow)
	}
	path := writeTOML(t, dir, toml("dns:site-a.test"))
	code, out := checkRun(t, "-c", path)
	want := fmt.Sprintf(`  ERROR   config %s:9: service "erp": allow "dns:site-a.test" names no CA, but this agent trusts 2 CAs (ca %s), and any of them can issue a certificate with that name; write it as one of: "dns:site-a.test from ca:sha256:%s" (CN="Partner A CA"); "dns:site-a.test from ca:sha256:%s" (CN="Partner B CA")`,
		path, both, fpA, fpB)
	if code != 1 || !strings.Contains(out, want+"\n") {
		t.Fatalf("check exit %d, output:\n%s\nwant exit 1 and the line:\n%s", code, out, want)
	}

	path = writeTOML(t, dir, toml("dns:site-a.test from ca:sha256:"+fpA))
	if code, out := checkRun(t, "-c", path); code != 0 || strings.Contains(out, "names no CA") {
		t.Fatalf("check of a scoped allow: exit %d, output:\n%s", code, out)
	}
}
