package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/wire"
)

// certCase is one refused handshake. The hub is an agent; the dialing side
// is a site agent, or a raw TLS client when raw is set (for what an agent
// never sends: no certificate, TLS 1.2 only, odd cipher suites). Each side's
// explanation must carry the key words.
type certCase struct {
	name string
	// setup may replace p's files and returns extra keys for the hub's
	// [[server]] and the site's [[client]].
	setup   func(t *testing.T, dir string, p *pki) (hubKeys, siteKeys string)
	raw     func(t *testing.T, p *pki) *tls.Config
	hubLog  []string // in the hub's log
	siteLog []string // in the site's log, or in the raw client's explained error
}

func certCases() []certCase {
	none := func(*testing.T, string, *pki) (string, string) { return "", "" }
	return []certCase{
		{
			name: "client certificate from an unknown CA",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				other := testca.New(t, "Other Root")
				p.site = other.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", p.ca)
				return "", ""
			},
			hubLog:  []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" was signed by an unknown authority`, `issuer CN=\"Other Root\"`, `trusted: CN=\"Test Partners CA\"`, "sha256:"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", "the server rejected our certificate", "does not trust the CA that signed our certificate"},
		},
		{
			name: "server certificate from an unknown CA",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				other := testca.New(t, "Rogue Root")
				p.hub = other.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", p.ca)
				return "", ""
			},
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" was signed by an unknown authority`, `issuer CN=\"Rogue Root\"`, `trusted: CN=\"Test Partners CA\"`},
		},
		{
			name:    "server name mismatch",
			setup:   func(*testing.T, string, *pki) (string, string) { return "", `server_name = "other.test"` },
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate", "server_name"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" is not valid for \"other.test\"`, "DNS:hub.test", "serial "},
		},
		{
			name: "expired server certificate",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				p.hub = p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"},
					NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-5 * time.Hour)}).Write(t, dir, "hub", p.ca)
				return "", ""
			},
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" expired 5h`, "not after", "local clock", "NTP", "sha256:"},
		},
		{
			name: "client certificate not yet valid",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				p.site = p.ca.Issue(t, testca.Options{CN: "site-a",
					NotBefore: time.Now().Add(2 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}).Write(t, dir, "site", p.ca)
				return "", ""
			},
			hubLog: []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" is not valid yet: valid from`, "local clock", "NTP"},
			// The hub tells the site why (docs/protocol.md, Refusal reasons).
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: client certificate CN=\"site-a\" is not valid yet: valid from`, "NTP"},
		},
		{
			name: "client certificate revoked by CRL",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				site := p.ca.Issue(t, testca.Options{CN: "site-a"})
				p.site = site.Write(t, dir, "site", p.ca)
				crl := filepath.Join(dir, "partners.crl")
				writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour), site.Cert.SerialNumber)
				return fmt.Sprintf("crl = [%q]", crl), ""
			},
			hubLog:  []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" was revoked on`, "reason: key-compromise", "according to CRL ", "partners.crl", "serial "},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: client certificate CN=\"site-a\" was revoked on`, "reason: key-compromise", "partners.crl"},
		},
		{
			name: "server certificate revoked by CRL",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				hub := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
				p.hub = hub.Write(t, dir, "hub", p.ca)
				crl := filepath.Join(dir, "hub.crl")
				writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour), hub.Cert.SerialNumber)
				return "", fmt.Sprintf("crl = [%q]", crl)
			},
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" was revoked`, "according to CRL ", "hub.crl"},
		},
		{
			name: "stale CRL refused",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				crl := filepath.Join(dir, "old.crl")
				writeCRL(t, p.ca, crl, time.Now().Add(-2*time.Hour))
				return fmt.Sprintf("crl = [%q]", crl), ""
			},
			hubLog:  []string{`msg="tunnel refused"`, `cannot check client certificate CN=\"site-a\" for revocation`, "old.crl", "is stale", "crl_stale"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: cannot check client certificate CN=\"site-a\" for revocation`, "is stale"},
		},
		{
			name:    "server does not match the client's peer pin",
			setup:   func(*testing.T, string, *pki) (string, string) { return "", `peer = ["dns:partner.test", "cn:hub-2"]` },
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" matches none of peer = [dns:partner.test, cn:hub-2]`, `\"dns:hub.test\"`, "sha256:"},
		},
		{
			name: "client certificate for servers only",
			setup: func(t *testing.T, dir string, p *pki) (string, string) {
				p.site = p.ca.Issue(t, testca.Options{CN: "site-a", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).Write(t, dir, "site", p.ca)
				return "", ""
			},
			hubLog: []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" may not be used for this purpose`, "only serverAuth", "clientAuth"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", "the server rejected our certificate",
				`our own certificate CN=\"site-a\" lacks the clientAuth usage its peers require`, "--usage client", "likely this"},
		},
		{
			name:  "no client certificate",
			setup: none,
			raw: func(t *testing.T, p *pki) *tls.Config {
				return &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test", NextProtos: []string{wire.ALPN}}
			},
			hubLog:  []string{`msg="tunnel refused"`, `reason="the client presented no certificate`},
			siteLog: []string{"the server rejected our certificate", "certificate required"},
		},
		{
			name:  "TLS version mismatch",
			setup: none,
			raw: func(t *testing.T, p *pki) *tls.Config {
				return &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test", MaxVersion: tls.VersionTLS12,
					Certificates: []tls.Certificate{siteCert(t, p)}, NextProtos: []string{wire.ALPN}}
			},
			hubLog:  []string{`msg="tunnel refused"`, "no common TLS version with the client", "min_version"},
			siteLog: []string{"the server refused our TLS version", "protocol version not supported", "min_version"},
		},
		{
			name:  "no common cipher suite",
			setup: func(*testing.T, string, *pki) (string, string) { return `min_version = "1.2"`, "" },
			raw: func(t *testing.T, p *pki) *tls.Config {
				return &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test", MaxVersion: tls.VersionTLS12,
					CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256},
					Certificates: []tls.Certificate{siteCert(t, p)}, NextProtos: []string{wire.ALPN}}
			},
			hubLog:  []string{`msg="tunnel refused"`, "no common TLS cipher suite with the client"},
			siteLog: []string{"the server ended the handshake", "handshake failure", "cipher suite"},
		},
	}
}

// TestCertificateFailures: every refused handshake is explained on both
// sides in words that say what to fix.
func TestCertificateFailures(t *testing.T) {
	for _, tc := range certCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := newPKI(t, dir)
			hubKeys, siteKeys := tc.setup(t, dir, p)
			hub := start(t, dir, "hub", withServerKeys(hubTOML(p, ""), hubKeys))
			addr := hub.ServerAddrs()[0].String()
			if tc.raw != nil {
				err := rawHandshake(t, addr, tc.raw(t, p))
				if err == nil {
					t.Fatal("the handshake succeeded")
				}
				got := trust.Explain(err, trust.SideClient, nil, time.Now())
				if !containsAll(got, tc.siteLog) {
					t.Errorf("client side: %q lacks one of %q (error: %v)", got, tc.siteLog, err)
				}
			} else {
				site := start(t, dir, "site", withClientKeys(siteTOML(p, addr), siteKeys))
				site.log.WaitFor(t, 10*time.Second, tc.siteLog...)
			}
			hub.log.WaitFor(t, 10*time.Second, tc.hubLog...)
		})
	}
}

// TestNotTLS: a site whose servers entry names a web server, and an HTTP
// client aimed at the tunnel port, are both told that the other end does
// not speak TLS.
func TestNotTLS(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	web := testnet.Listen(t)
	testnet.Serve(t, web, func(c *net.TCPConn) {
		c.Read(make([]byte, 4096))
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	site := start(t, dir, "site", siteTOML(p, web.Addr().String()))
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", "the server answered with plain HTTP, not TLS", "servers")

	hub := start(t, dir, "hub", hubTOML(p, ""))
	c, err := net.Dial("tcp", hub.ServerAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
	hub.log.WaitFor(t, 5*time.Second, `msg="tunnel refused"`, `reason="the client sent a plain HTTP request, not TLS`)
}

// TestPeerPinMatch: a client whose peer list names the server connects.
func TestPeerPinMatch(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	site := start(t, dir, "site", withClientKeys(siteTOML(p, hub.ServerAddrs()[0].String()), `peer = ["cn:nobody", "dns:hub.test"]`))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
}
