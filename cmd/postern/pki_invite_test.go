package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
)

// TestPKIInvite: stdout is the token alone (a script captures it); with
// -c the hub's [ca] dir, identities and validity apply.
func TestPKIInvite(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir)
	out := pkiMust(t, "invite", "--dir", caDir, "--dns", "site-b.example.com", "--uri", "spiffe://example.com/site-b", "--hub", "hub.example.com:7443", "--ttl", "2h")
	tok, err := pki.ParseToken(out)
	if err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q: %v", out, err)
	}
	if tok.Hub != "hub.example.com:7443" || !slices.Contains(tok.Identities, "uri:spiffe://example.com/site-b") {
		t.Fatalf("token %+v", tok)
	}
	if _, err := os.Stat(filepath.Join(caDir, pki.InvitationsDir, tok.IDString()+".json")); err != nil {
		t.Fatal(err)
	}
	// invite reads ca.crt, never ca.key (docs/certificates.md): it works
	// with the key out of the folder.
	keyFile := filepath.Join(caDir, pki.KeyFile)
	if err := os.Rename(keyFile, keyFile+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ParseToken(pkiMust(t, "invite", "--dir", caDir, "--dns", "site-c.example.com", "--hub", "hub.example.com:7443")); err != nil {
		t.Fatalf("invite without ca.key: %v", err)
	}
	if err := os.Rename(keyFile+".away", keyFile); err != nil {
		t.Fatal(err)
	}

	hub := filepath.Join(dir, "hub.toml")
	os.WriteFile(hub, []byte(`[tls]
cert = "hub.crt"
key = "hub.key"
ca = "pki/ca.crt"
[ca]
dir = "pki"
identities = ["dns:*.sites.example.com"]
validity = "30d"
[[server]]
listen = "127.0.0.1:7443"
`), 0o600)
	out = pkiMust(t, "invite", "-c", hub, "--dns", "b.sites.example.com", "--hub", "hub:7443")
	tok, _ = pki.ParseToken(out)
	rec, _ := os.ReadFile(filepath.Join(caDir, pki.InvitationsDir, tok.IDString()+".json"))
	if !bytes.Contains(rec, []byte(`"validity": "720h0m0s"`)) {
		t.Fatalf("[ca] validity not the default:\n%s", rec)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-c", hub, "--dns", "b.example.com", "--hub", "hub:7443"}, 1, "dns:b.example.com is outside what this CA may grant"},
		{[]string{"-c", hub, "--dns", "b.sites.example.com", "--hub", "hub:7443", "--validity", "90d"}, 1, "validity 90d is longer than [ca] validity 30d allows"},
		{[]string{"--dir", caDir, "--dns", "b.example.com"}, 2, "--hub HOST:PORT is required"},
		{[]string{"--dir", filepath.Join(dir, "none"), "--dns", "b.example.com", "--hub", "hub:7443"}, 1, "no such file"},
	} {
		code, out, errs := pkiRun(t, "", append([]string{"invite"}, tc.args...)...)
		if code != tc.code || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %s; want exit %d and …%s…", tc.args, code, out, errs, tc.code, tc.want)
		}
	}
}

// TestCAKeyTypesAgree: [ca] key_types accepts exactly what pki makes.
func TestCAKeyTypesAgree(t *testing.T) {
	var names []string
	for _, k := range pki.KeyTypes() {
		names = append(names, string(k))
	}
	if !slices.Equal(names, config.CAKeyTypes) {
		t.Fatalf("pki.KeyTypes %q, config.CAKeyTypes %q", names, config.CAKeyTypes)
	}
}

// TestCheckEnrollPending: before its first start, a site with [enroll]
// has no certificate: check reads the token instead of failing on the
// missing files.
func TestCheckEnrollPending(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir)
	token := pkiMust(t, "invite", "--dir", caDir, "--dns", "b.example.com", "--hub", "hub.example.com:7443")
	site := filepath.Join(dir, "site.toml")
	os.WriteFile(site, []byte("[tls]\ncert = \"c/site.crt\"\nkey = \"c/site.key\"\nca = \"c/ca.crt\"\n[enroll]\ntoken_file = \"tok\"\n[[client]]\nname = \"hub\"\nservers = [\"hub.example.com:7443\"]\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "tok"), []byte(token), 0o600)
	var out, errb bytes.Buffer
	if code := cmdCheck([]string{"-c", site}, &out, &errb); code != 0 || !strings.Contains(out.String(), "not enrolled yet; `postern run` enrolls first with hub hub.example.com:7443") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errb.String())
	}
	os.WriteFile(filepath.Join(dir, "tok"), []byte(token[:30]), 0o600)
	out.Reset()
	if code := cmdCheck([]string{"-c", site}, &out, &errb); code != 1 || !strings.Contains(out.String(), "malformed enrollment token") {
		t.Fatalf("cut token: exit %d:\n%s", code, out.String())
	}
}

// TestCheckCA: check opens a hub's [ca] folder, warns when a [[server]]
// certificate is not from that CA (enrolling sites would refuse the hub)
// and counts the invitations.
func TestCheckCA(t *testing.T) {
	dir := t.TempDir()
	caDir, otherDir := filepath.Join(dir, "pki"), filepath.Join(dir, "other")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "init", "--dir", otherDir)
	pkiMust(t, "issue", "--dir", caDir, "--usage", "server", "--dns", "hub.test", "--out", filepath.Join(dir, "hub"))
	pkiMust(t, "issue", "--dir", otherDir, "--usage", "server", "--dns", "hub.test", "--out", filepath.Join(dir, "stray"))
	pkiMust(t, "invite", "--dir", caDir, "--dns", "b.example.com", "--hub", "hub.test:7443")
	pkiMust(t, "invite", "--dir", caDir, "--dns", "c.example.com", "--hub", "hub.test:7443")
	hub := filepath.Join(dir, "hub.toml")
	write := func(cert string, ca ...string) {
		bundle := "pki/ca.crt"
		if len(ca) > 0 {
			bundle = ca[0]
		}
		os.WriteFile(hub, []byte("[tls]\ncert = \""+cert+".crt\"\nkey = \""+cert+".key\"\nca = \""+bundle+"\"\n[ca]\ndir = \"pki\"\n[[server]]\nlisten = \"127.0.0.1:7443\"\n"), 0o600)
	}
	write("hub")
	var out, errb bytes.Buffer
	if code := cmdCheck([]string{"-c", hub}, &out, &errb); code != 0 || !strings.Contains(out.String(), "invitations: 2 open, 0 used, 0 expired") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errb.String())
	}
	// invite -c warns when no server certificate carries the --hub host.
	code, _, errs := pkiRun(t, "", "invite", "-c", hub, "--dns", "d.example.com", "--hub", "elsewhere.test:7443")
	if code != 0 || !strings.Contains(errs, `warning: no [[server]] certificate carries "elsewhere.test"`) {
		t.Fatalf("invite for a host the hub's certificate lacks: exit %d: %s", code, errs)
	}
	if _, _, errs := pkiRun(t, "", "invite", "-c", hub, "--dns", "d.example.com", "--hub", "hub.test:7443"); strings.Contains(errs, "warning") {
		t.Fatalf("invite for the hub's own name warned: %s", errs)
	}
	write("stray")
	out.Reset()
	cmdCheck([]string{"-c", hub}, &out, &errb)
	if !strings.Contains(out.String(), "is not from this CA") || !strings.Contains(out.String(), "a site enrolling there refuses the hub") {
		t.Fatalf("stray server certificate:\n%s", out.String())
	}
	write("hub", "other/ca.crt")
	out.Reset()
	cmdCheck([]string{"-c", hub}, &out, &errb)
	if !strings.Contains(out.String(), "lacks the CA in [ca] dir: sites enrolled here would be refused by it") {
		t.Fatalf("server ca without [ca]'s CA:\n%s", out.String())
	}
	os.Remove(filepath.Join(caDir, "ca.key"))
	out.Reset()
	if code := cmdCheck([]string{"-c", hub}, &out, &errb); code != 1 || !strings.Contains(out.String(), "[ca] dir "+caDir) {
		t.Fatalf("no CA key: exit %d:\n%s", code, out.String())
	}
}
