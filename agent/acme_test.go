package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/internal/testpebble"
	"github.com/postern-tunnel/postern/wire"
)

// TestACMEPebble: a hub with [acme] obtains its server certificate from a
// Pebble ACME server at start, a site whose ca bundle is Pebble's root
// connects to it, and a renewal (renew_before close to the lifetime) is
// served on the next handshake while a stream that started before it
// keeps going.
func TestACMEPebble(t *testing.T) {
	pb := testpebble.Start(t, testpebble.Options{Validity: 40 * time.Second})
	release := make(chan struct{})
	slow := twoPartService(t, release)
	dir := t.TempDir()
	p := newPKI(t, dir)
	acmeDir := filepath.Join(dir, "acme")
	issuerCA := filepath.Join(dir, "pebble-roots.pem")
	testca.WriteFile(t, issuerCA, pb.IssuerRoots)

	hubCfg := fmt.Sprintf(`
name = "hub"
shutdown_timeout = "5s"
[tunnel]
open_timeout = "60s"
[tls]
cert = %q
key = %q
ca = %q
reload_interval = "50ms"
[acme]
directory = %q
domains = ["hub.test"]
email = "ops@hub.test"
dir = %q
ca_roots = %q
http_listen = "127.0.0.1:0"
renew_before = "34s"
[[server]]
listen = "127.0.0.1:0"
%s`, filepath.Join(acmeDir, "cert.pem"), filepath.Join(acmeDir, "key.pem"), p.hub.CA,
		pb.Directory, acmeDir, pb.TLSRoots, serviceTOML("slow", slow, "*"))
	hub := start(t, dir, "hub", hubCfg)
	obtained := hub.log.WaitFor(t, 10*time.Second, "acme: certificate obtained", "domains=[hub.test]")
	addr := hub.ServerAddrs()[0].String()

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pb.IssuerRoots) {
		t.Fatal("pebble root: no PEM certificate")
	}
	first := acmeHandshake(t, p, addr, "hub.test", roots)
	if !strings.Contains(first.Issuer.CommonName, "Pebble Intermediate CA") {
		t.Fatalf("hub presents a certificate issued by %q, want Pebble's intermediate", first.Issuer.CommonName)
	}
	if !strings.Contains(obtained, "serial="+first.SerialNumber.Text(16)) {
		t.Fatalf("hub presents serial %x, not the one it obtained: %s", first.SerialNumber, obtained)
	}

	site := start(t, dir, "site", strings.Replace(siteTOML(p, addr, "slow"), fmt.Sprintf("ca = %q", p.site.CA), fmt.Sprintf("ca = %q", issuerCA), 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, len("part one;"))); err != nil {
		t.Fatal(err)
	}

	// Renewal is due 6s after issuance (40s lifetime, renew 34s before).
	hub.log.WaitFor(t, 30*time.Second, "reloaded certificate material", "was serial "+first.SerialNumber.Text(16))
	got := acmeHandshake(t, p, addr, "hub.test", roots)
	if got.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("after renewal the next handshake still presents serial %x", got.SerialNumber)
	}
	if !strings.Contains(hub.log.String(), "serial="+got.SerialNumber.Text(16)) {
		t.Fatalf("the next handshake presents serial %x, which the hub never obtained", got.SerialNumber)
	}

	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(c); err != nil || string(rest) != "part two" {
		t.Fatalf("stream across the renewal: got %q, %v; want the rest and a clean end", rest, err)
	}
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("the site connected %d times, want once: renewal must not drop the tunnel", n)
	}
	if n := countLines(hub.log.String(), "certificate reload failed"); n != 0 {
		t.Errorf("renewal logged %d reload failures, want none", n)
	}
}

// TestACMEPebbleHTTP01: Pebble validates the http-01 challenge for real,
// fetching it from the hub's http_listen, before it issues.
func TestACMEPebbleHTTP01(t *testing.T) {
	// Pebble connects to the first address the system resolver gives for
	// the domain: listen there, and tell Pebble the port.
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve localhost: %v %v", addrs, err)
	}
	challenge, err := net.Listen("tcp", net.JoinHostPort(addrs[0], "0"))
	if err != nil {
		t.Fatal(err)
	}
	pb := testpebble.Start(t, testpebble.Options{HTTPPort: challenge.Addr().(*net.TCPAddr).Port})
	dir := t.TempDir()
	p := newPKI(t, dir)
	acmeDir := filepath.Join(dir, "acme")
	hubCfg := fmt.Sprintf(`
name = "hub"
shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
[acme]
directory = %q
domains = ["localhost"]
dir = %q
ca_roots = %q
http_listen = "localhost:0"
[[server]]
listen = "127.0.0.1:0"
`, filepath.Join(acmeDir, "cert.pem"), filepath.Join(acmeDir, "key.pem"), p.hub.CA, pb.Directory, acmeDir, pb.TLSRoots)
	listen := func(network, addr string) (net.Listener, error) {
		if addr == "localhost:0" {
			return challenge, nil
		}
		return net.Listen(network, addr)
	}
	hub := startWith(t, dir, "hub", hubCfg, Options{Listen: listen})
	hub.log.WaitFor(t, 10*time.Second, "acme: certificate obtained", "domains=[localhost]")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.IssuerRoots)
	got := acmeHandshake(t, p, hub.ServerAddrs()[0].String(), "localhost", roots)
	if !strings.Contains(got.Issuer.CommonName, "Pebble Intermediate CA") || got.VerifyHostname("localhost") != nil {
		t.Fatalf("hub presents %v issued by %q, want a certificate for localhost from Pebble", got.DNSNames, got.Issuer.CommonName)
	}
}

// acmeHandshake dials the hub as the site would, trusting roots for the
// hub's certificate, and returns the certificate it presents.
func acmeHandshake(t testing.TB, p *pki, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: serverName,
		Certificates: []tls.Certificate{siteCert(t, p)}, NextProtos: []string{wire.ALPN}})
	if err != nil {
		t.Fatalf("handshake with the hub, trusting pebble's root: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}
