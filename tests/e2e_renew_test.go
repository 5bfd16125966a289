//go:build unix

package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2ERenewAndRevoke: with the built binary, a site whose certificate
// lives 30 seconds (then 40) renews it twice over its tunnel from the hub's [ca]
// while a stream moves data through that tunnel (every byte back,
// SHA-256 equal, nothing reset); `postern status` shows the renewals;
// then `postern pki revoke` of the renewed certificate, with the hub
// running, cuts the site's tunnel at once and keeps it out.
func TestE2ERenewAndRevoke(t *testing.T) {
	bin := e2eBinary(t)
	pki := faultNewPKI(t)
	pki.run(t, "issue", "--usage", "client", "--cn", "site-r", "--dns", "site-r.test", "--validity", "30s", "--out", filepath.Join(pki.dir, "site-r"))
	siteCert, siteKey := filepath.Join(pki.dir, "site-r.crt"), filepath.Join(pki.dir, "site-r.key")
	echo := e2eServe(t, testnet.Echo)
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, pki.dir, "hub", fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
[[server]]
listen = "127.0.0.1:0"
[ca]
dir = "pki"
validity = "40s"
%s`, pki.hubCert, pki.hubKey, pki.ca, e2eServiceTOML("echo", echo, "cn:site-r"))))
	sitePath := e2eWriteConfig(t, pki.dir, "site", fmt.Sprintf(`name = "site"
shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
renew_before = "22s"
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"
[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "hub"
`, siteCert, siteKey, pki.ca, hub.serverAddr(t)))
	site := e2eStartAgent(t, "site", sitePath)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	c := testnet.Dial(t, site.forwardAddr(t, "echo"))
	stop := make(chan struct{})
	sent, got := sha256.New(), sha256.New()
	wrote := make(chan error, 1)
	go func() {
		buf := make([]byte, 8<<10)
		for {
			select {
			case <-stop:
				wrote <- c.CloseWrite()
				return
			default:
			}
			rand.Read(buf)
			if _, err := c.Write(buf); err != nil {
				wrote <- err
				return
			}
			sent.Write(buf)
		}
	}()
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(got, c)
		read <- err
	}()
	// Renewed at 8s, then 18s after each renewal: the revocation below
	// lands well before a third.
	deadline := time.Now().Add(40 * time.Second)
	for strings.Count(site.log.String(), `msg="certificate renewed"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("two renewals did not happen within 40s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	renewed := regexp.MustCompile(`msg="certificate renewed" cert=\S+ serial=(\S+)`).FindAllStringSubmatch(site.log.String(), -1)
	close(stop)
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := <-read; err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(sent.Sum(nil)) != string(got.Sum(nil)) {
		t.Fatal("SHA-256 of what came back differs from what was sent")
	}
	if strings.Contains(site.log.String(), "stream reset") || strings.Contains(hub.log.String(), "stream reset") {
		t.Error("a stream was reset across the renewals")
	}
	out, err := exec.Command(bin, "status", "--json", "-c", sitePath).Output()
	if err != nil {
		t.Fatalf("postern status --json: %v\n%s", err, out)
	}
	var st agent.Status
	if err := json.Unmarshal(out, &st); err != nil || len(st.Renewals) != 1 || st.Renewals[0].Renewals < 2 || !strings.HasPrefix(st.Renewals[0].Signer, "tunnel hub (") {
		t.Errorf("status renewals: %v\n%s", err, out)
	}

	// The hub watches its [ca] CRL: revoking the certificate in use now
	// cuts the tunnel without a reload.
	serial := renewed[len(renewed)-1][1]
	pki.run(t, "revoke", serial)
	hub.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", `CN=\"site-r\" was revoked`, "serial "+serial)
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", "hub refused this agent's certificate", "was revoked")
}
