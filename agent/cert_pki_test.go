package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	capki "github.com/postern-tunnel/postern/pki"
)

// TestPKIRoundTrip: the operator makes a CA with the pki package (what
// `postern pki` runs), issues the hub's certificate, and signs the request
// a partner made on its own machine; the partner's tunnel works. Then the
// partner is revoked: the CRL is rewritten, the hub reloads it, closes the
// partner's tunnel and refuses it from then on.
func TestPKIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	ca, err := capki.Init(caDir, capki.InitOptions{CommonName: "Acme Partners CA"})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		testca.WriteFile(t, path, data)
		return path
	}
	caFile := filepath.Join(caDir, capki.CertFile)
	crlFile := filepath.Join(caDir, capki.CRLFile)

	// The hub: issued here, key and all.
	hubCert, hubKey, err := ca.Issue(capki.IssueOptions{Usage: capki.UsageServer,
		Names: capki.Names{DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}})
	if err != nil {
		t.Fatal(err)
	}
	// The partner: key and request made on its side; only the request travels.
	csrPEM, partnerKey, err := capki.NewRequest(capki.RequestOptions{Names: capki.Names{CommonName: "partner-b", DNSNames: []string{"partner-b.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := capki.ParseRequestPEM(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	partner, err := ca.Sign(csr, capki.SignOptions{Usage: capki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}

	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hubCfg := fmt.Sprintf(`
name = "hub"
shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
crl = [%q]
[[server]]
listen = "127.0.0.1:0"
%s`, write("hub.crt", hubCert), write("hub.key", hubKey), caFile, crlFile, serviceTOML("erp", ln.Addr().String(), "dns:partner-b.test"))
	hub := start(t, dir, "hub", hubCfg)
	partnerCfg := fmt.Sprintf(`
name = "partner-b"
shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"
[[forward]]
listen = "127.0.0.1:0"
service = "erp"
via = "hub"
`, write("partner.crt", capki.CertPEM(partner)), write("partner.key", partnerKey), caFile, hub.ServerAddrs()[0].String())
	site := start(t, dir, "partner", partnerCfg)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	roundTrip(t, c, "order 4711")

	// Revoke: the CA rewrites its CRL; the hub reloads it.
	if err := ca.RevokeCertificate(partner, capki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CRL(0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crlFile); err != nil {
		t.Fatal(err)
	}
	if err := hub.Reload(); err != nil {
		t.Fatal(err)
	}
	hub.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", "peer_addr=", `client certificate CN=\"partner-b\" was revoked`, "reason: key-compromise", capki.CRLFile)
	hub.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, `client certificate CN=\"partner-b\" was revoked`, "serial "+capki.FormatSerial(partner.SerialNumber))
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: client certificate CN=\"partner-b\" was revoked`)
}
