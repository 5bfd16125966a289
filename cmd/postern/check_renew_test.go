package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/pki"
)

// TestCheckRenewal: postern check says when each certificate renews and
// who signs it: the local [ca] for a hub's own certificate, a peer's over
// tunnel "hub" for a site's.
func TestCheckRenewal(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{CommonName: "Check CA"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "hub", IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}},
		Usage: pki.UsageBoth, Validity: 90 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, filepath.Join(dir, "a.crt"), certPEM)
	if err := os.WriteFile(filepath.Join(dir, "a.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	base := `
[tls]
cert = "a.crt"
key = "a.key"
ca = "pki/ca.crt"
`
	hub := writeTOML(t, dir, base+"renew_before = \"30d\"\n[[server]]\nlisten = \"127.0.0.1:0\"\n[ca]\ndir = \"pki\"\n")
	code, out := checkRun(t, "-c", hub)
	if code != 0 || !strings.Contains(out, "renewal: cert "+filepath.Join(dir, "a.crt")+" renews at ") || !strings.Contains(out, "(30d0h before expiry: renew_before 30d0h), in 59d") ||
		!strings.Contains(out, "signed by the local [ca] "+filepath.Join(dir, "pki")) {
		t.Errorf("hub: exit %d\n%s", code, out)
	}
	site := writeTOML(t, dir, base+"[[client]]\nname = \"hub\"\nservers = [\"127.0.0.1:1\"]\n")
	code, out = checkRun(t, "-c", site)
	if code != 0 || !strings.Contains(out, "before expiry: a third of its lifetime), in 59d") ||
		!strings.Contains(out, `over tunnel "hub" (or one a peer opens), by the peer whose [ca] issued it`) {
		t.Errorf("site: exit %d\n%s", code, out)
	}
}

// TestStatusRenewals: postern status prints the renewal table.
func TestStatusRenewals(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printStatus(&b, agent.Status{Agent: "site", Renewals: []agent.RenewalStatus{{
		Cert: "/etc/postern/site.crt", Serial: "3f9a", NotAfter: now.Add(90 * 24 * time.Hour), RenewAt: now.Add(60 * 24 * time.Hour),
		Signer: "tunnel hub (192.0.2.1:7443)", Renewals: 2,
	}}}, now)
	for _, want := range []string{"CERTIFICATE RENEWAL (1)", "/etc/postern/site.crt", "3f9a", "in 1440h0m0s", "tunnel hub (192.0.2.1:7443)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCheckRunningRenewalFailure: postern check shows the renewals the
// running agent keeps failing, with the signer's reason, how many times
// and the time left; the hub's own renewal, not due, is fine.
func TestCheckRunningRenewalFailure(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{CommonName: "Check CA"})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, names pki.Names, validity time.Duration) {
		certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{Names: names, Usage: pki.UsageBoth, Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		testca.WriteFile(t, filepath.Join(dir, name+".crt"), certPEM)
		if err := os.WriteFile(filepath.Join(dir, name+".key"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	issue("hub", pki.Names{CommonName: "hub", DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, 24*time.Hour)
	issue("site", pki.Names{CommonName: "site-a", DNSNames: []string{"site-a.test"}}, time.Hour)
	hub, hubPath := runNamed(t, dir, "hub", `name = "hub"
[tls]
cert = "hub.crt"
key = "hub.key"
ca = "pki/ca.crt"
[[server]]
listen = "127.0.0.1:0"
[ca]
dir = "pki"
key_types = ["ed25519"]
`, io.Discard)
	siteLog := &testnet.LogBuffer{}
	// renew_before as long as the validity: due at once, refused by the
	// hub for its key type.
	_, sitePath := runNamed(t, dir, "site", fmt.Sprintf(`name = "site-a"
[tls]
cert = "site.crt"
key = "site.key"
ca = "pki/ca.crt"
renew_before = "1h"
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
`, hub.ServerAddrs()[0].String()), siteLog)
	siteLog.WaitFor(t, 15*time.Second, "certificate renewal failed; retrying", "retry_in=2s")

	code, out := checkRun(t, "-c", sitePath)
	for _, want := range []string{
		"renewals in the running agent site-a (socket ",
		"WARNING renewal: cert " + filepath.Join(dir, "site.crt") + " (serial ",
		", expires in 59m",
		"key ECDSA P-256 is not in [ca] key_types (ed25519)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check of the site lacks %q", want)
		}
	}
	// Two failures when the check began; a third may have come since.
	if !regexp.MustCompile(`\) failed [23] time\(s\) in a row, next attempt in (now|[0-9])`).MatchString(out) {
		t.Error("check of the site does not count the failures")
	}
	if code != 0 {
		t.Errorf("exit %d, want 0 (a warning)", code)
	}
	code, out = checkRun(t, "-c", hubPath)
	if code != 0 || !strings.Contains(out, "ok      renewal: cert "+filepath.Join(dir, "hub.crt")+" (serial ") || !strings.Contains(out, "renewed 0 time(s) since the agent started, next in ") {
		t.Errorf("check of the hub: exit %d", code)
	}
	if t.Failed() {
		t.Logf("output of the last check:\n%s", out)
	}
}
