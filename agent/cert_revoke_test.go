package agent

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestRevokeConnectedClient: two sites are connected; site-a's certificate
// is revoked and the hub's CRL reloaded. site-a's tunnel is closed at once
// and it cannot come back; site-b keeps its tunnel and its stream in flight.
func TestRevokeConnectedClient(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	siteA := p.ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	p.site = siteA.Write(t, dir, "site-a", p.ca)
	pb := *p
	pb.site = p.ca.Issue(t, testca.Options{CN: "site-b", DNS: []string{"site-b.test"}}).Write(t, dir, "site-b", p.ca)

	crl := filepath.Join(dir, "partners.crl")
	writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour))
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hubCfg := withServerKeys(hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")), fmt.Sprintf("crl = [%q]", crl))
	hub := start(t, dir, "hub", hubCfg)
	addr := hub.ServerAddrs()[0].String()
	a := start(t, dir, "site-a", siteTOML(p, addr, "echo"))
	b := start(t, dir, "site-b", strings.Replace(siteTOML(&pb, addr, "echo"), `name = "site-a"`, `name = "site-b"`, 1))
	a.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	b.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	// A stream of site-b's is in flight across the revocation; so is one
	// of site-a's, which the hub cuts with the tunnel.
	inflight := testnet.Dial(t, b.ForwardAddrs()[0].String())
	roundTrip(t, inflight, "before")
	cut := testnet.Dial(t, a.ForwardAddrs()[0].String())
	roundTrip(t, cut, "before")

	writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour), siteA.Cert.SerialNumber)
	if err := hub.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	hub.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", "peer_addr=",
		`client certificate CN=\"site-a\" was revoked`, "according to CRL", "partners.crl", "serial "+siteA.Cert.SerialNumber.Text(16))
	hub.log.WaitFor(t, 5*time.Second, "reloaded certificate material", "partners.crl (1 revoked")
	// The hub says it cut site-a's stream itself, and why; not "by peer".
	hub.log.WaitFor(t, 5*time.Second, "stream reset", "tunnel closed by this agent: the peer no longer passes verification")
	a.log.WaitFor(t, 5*time.Second, "tunnel lost; reconnecting", "tunnel=hub")
	// It tries again and is refused, with the reason on both sides.
	hub.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, `client certificate CN=\"site-a\" was revoked`)
	a.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: client certificate CN=\"site-a\" was revoked`)
	if n := countLines(a.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("site-a connected %d times, want once (before the revocation)", n)
	}

	// site-b: same tunnel, same stream, still working.
	roundTrip(t, inflight, "after")
	inflight.CloseWrite()
	if rest, err := io.ReadAll(inflight); err != nil || len(rest) != 0 {
		t.Errorf("in-flight stream ended with %q, %v; want a clean end", rest, err)
	}
	if n := countLines(hub.log.String(), "tunnel accepted", `peer="CN=\"site-b\"`); n != 1 {
		t.Errorf("site-b's tunnel was accepted %d times, want once", n)
	}
	if strings.Contains(b.log.String(), "tunnel lost") {
		t.Error("site-b lost its tunnel")
	}
}

// roundTrip writes msg on c and reads it back from an echo service.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
	}
}

// TestCAChangeClosesTunnel: a CA bundle that no longer trusts a connected
// server closes the client's tunnel (after a reload found by polling), and
// the client says why when it tries again.
func TestCAChangeClosesTunnel(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	site := start(t, dir, "site", withClientKeys(siteTOML(p, hub.ServerAddrs()[0].String()), `reload_interval = "50ms"`))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	other := testca.New(t, "New Partners CA")
	testca.WriteFile(t, p.site.CA, other.PEM)
	site.log.WaitFor(t, 5*time.Second, "reloaded certificate material", "tunnel=hub", `ca CN=\"New Partners CA\"`)
	site.log.WaitFor(t, 5*time.Second, "closing tunnel: the peer no longer passes verification", "tunnel=hub", "addr=",
		`server certificate CN=\"hub\" was signed by an unknown authority`, `trusted: CN=\"New Partners CA\"`)
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" was signed by an unknown authority`, "retrying")
}
