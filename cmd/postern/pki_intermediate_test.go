package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/identity"
)

// TestPKIIntermediate: the operator makes a root that may sign partners'
// CAs, then a constrained CA for partner A as a folder (key made here) and
// one for partner B from B's own request (B's key stays with B); each
// partner's CA issues only its own names.
func TestPKIIntermediate(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	pkiMust(t, "init", "--dir", root, "--cn", "Hub Root", "--intermediates")

	partnerA := filepath.Join(dir, "partner-a")
	out := pkiMust(t, "intermediate", "--dir", root, "--cn", "Partner A CA", "--permit-dns", "partner-a.example.com", "--out", partnerA)
	interA := pkiReadCertFile(t, filepath.Join(partnerA, "ca.crt"))
	for _, want := range []string{
		"issued intermediate CA CN=Partner A CA",
		"path length 0",
		"may certify only: dns:partner-a.example.com and *.partner-a.example.com",
		"from ca:sha256:" + identity.Fingerprint(interA),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	pkiMust(t, "issue", "--dir", partnerA, "--usage", "client", "--dns", "gw.partner-a.example.com", "--out", filepath.Join(dir, "gw"))
	show := pkiMust(t, "show", "--ca", filepath.Join(root, "ca.crt"), filepath.Join(dir, "gw.crt"))
	if strings.Count(show, "verified by CN=Hub Root") != 2 {
		t.Errorf("show of the partner's leaf does not verify leaf and intermediate to the root:\n%s", show)
	}
	code, _, errOut := pkiRun(t, "", "issue", "--dir", partnerA, "--usage", "client", "--dns", "gw.partner-b.example.com", "--out", filepath.Join(dir, "evil"))
	if code != 1 || !strings.Contains(errOut, `DNS name "gw.partner-b.example.com" is outside what the CA CN=Partner A CA may certify`) {
		t.Errorf("issue outside the constraint: exit %d, %s", code, errOut)
	}

	// Partner B keeps its key: request there, intermediate here.
	reqPrefix := filepath.Join(dir, "partner-b", "ca")
	pkiMust(t, "request", "--cn", "Partner B CA", "--out", reqPrefix)
	pkiMust(t, "intermediate", "--dir", root, "--csr", reqPrefix+".csr", "--permit-uri", "partner-b.example.com")
	if _, err := os.Stat(reqPrefix + ".crt"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(reqPrefix+".crt", filepath.Join(dir, "partner-b", "ca.crt")); err != nil {
		t.Fatal(err)
	}
	pkiMust(t, "issue", "--dir", filepath.Join(dir, "partner-b"), "--usage", "client", "--cn", "gw-b", "--uri", "spiffe://partner-b.example.com/gw", "--out", filepath.Join(dir, "gw-b"))

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"intermediate", "--dir", root, "--cn", "X", "--out", filepath.Join(dir, "x")}, "give at least one --permit-dns, --permit-uri or --permit-ip"},
		{[]string{"intermediate", "--dir", root, "--permit-dns", "x.example.com"}, "--cn NAME and --out DIR are required"},
		{[]string{"intermediate", "--dir", partnerA, "--cn", "Y", "--permit-dns", "y.partner-a.example.com", "--out", filepath.Join(dir, "y")}, "may not sign other CAs (its path length is 0)"},
		{[]string{"intermediate", "--dir", root, "--cn", "Z", "--permit-ip", "10.0.0.0/33", "--out", filepath.Join(dir, "z")}, `"10.0.0.0/33" is not an IP range`},
	} {
		code, _, errOut := pkiRun(t, "", tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("postern pki %s: exit %d, stderr:\n%s\nwant it to contain %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
	}
}
