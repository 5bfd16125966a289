package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/internal/testca"
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
