package trust_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/wire"
)

const handshakeWait = 10 * time.Second

// handshake runs a real TLS handshake over loopback TCP and returns each
// side's error. A side whose handshake succeeds reads once, which is where
// a TLS 1.3 client learns that the server refused its certificate.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	addr, done := acceptOne(t, handshakeWait, func(c net.Conn) error {
		tc := tls.Server(c, server)
		err := tc.Handshake()
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		return err
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(handshakeWait))
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	c.Close()
	return <-done, clientErr
}

// rawToServer sends bytes that are not a TLS ClientHello and returns the
// server's handshake error.
func rawToServer(t *testing.T, server *tls.Config, data []byte, serverDeadline time.Duration) error {
	t.Helper()
	addr, done := acceptOne(t, serverDeadline, func(c net.Conn) error {
		return tls.Server(c, server).Handshake()
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if data != nil {
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
	} else if serverDeadline == handshakeWait {
		c.Close() // the client goes away without a word
	}
	select {
	case err := <-done:
		return err
	case <-time.After(handshakeWait + time.Second):
		t.Fatal("server handshake did not end")
		return nil
	}
}

// acceptOne accepts one connection on a loopback listener, gives it
// deadline and sends what serve returns for it (or the accept error) on
// the returned channel. The listener closes when the test ends.
func acceptOne(t *testing.T, deadline time.Duration, serve func(c net.Conn) error) (addr string, result <-chan error) {
	t.Helper()
	ln := testnet.Listen(t)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(deadline))
		done <- serve(c)
	}()
	return ln.Addr().String(), done
}

// pki is a small world: the partners' CA that both agents trust, a hub
// (server) and a site (client) certificate from it.
type pki struct {
	ca         *testca.CA
	hub, site  *testca.Leaf
	trusted    []string
	serverName string
}

func newPKI(t *testing.T) *pki {
	ca := testca.New(t, "Partners CA")
	return &pki{
		ca:         ca,
		hub:        ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.example.com"}}),
		site:       ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.example.com"}}),
		trusted:    []string{`CN="Partners CA"`},
		serverName: "hub.example.com",
	}
}

func pool(cas ...*testca.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func certOf(l *testca.Leaf) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// serverConfig is what a Postern server asks of clients: a certificate
// from ca, and ALPN postern/1.
func serverConfig(leaf *testca.Leaf, ca *testca.CA) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{certOf(leaf)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool(ca),
		NextProtos:   []string{wire.ALPN},
	}
}

// clientConfig presents leaf (when not nil) whatever CAs the server names,
// as a Postern client does.
func clientConfig(leaf *testca.Leaf, ca *testca.CA, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool(ca),
		ServerName: serverName,
		NextProtos: []string{wire.ALPN},
	}
	if leaf != nil {
		cert := certOf(leaf)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// wantExplained asserts that Explain's sentence for err contains every
// one of want.
func wantExplained(t *testing.T, who string, err error, side trust.Side, trusted []string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: handshake succeeded, want an error", who)
	}
	got := trust.Explain(err, side, trusted, time.Now())
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: Explain(%q)\n = %q\nwant it to contain %q", who, err, got, w)
		}
	}
}

func TestExplainHandshakes(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	rogue := testca.New(t, "Rogue CA")
	rogueSite := rogue.Issue(t, testca.Options{CN: "rogue-site"})
	rogueHub := rogue.Issue(t, testca.Options{CN: "evil-hub", DNS: []string{"hub.example.com"}})
	expiredHub := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.example.com"},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-3*time.Hour - 12*time.Minute - 30*time.Second)})
	expiredSite := p.ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-26 * time.Hour)})
	futureHub := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.example.com"},
		NotBefore: now.Add(2 * time.Hour), NotAfter: now.Add(48 * time.Hour)})

	tests := []struct {
		name           string
		server, client *tls.Config
		serverWants    []string // words Explain must use for the server's error
		clientWants    []string // and for the client's
	}{
		{
			name:        "client without certificate",
			server:      serverConfig(p.hub, p.ca),
			client:      clientConfig(nil, p.ca, p.serverName),
			serverWants: []string{"the client presented no certificate", "cert and key"},
			clientWants: []string{"the server rejected our certificate", "certificate required", "configure cert and key"},
		},
		{
			name:   "client certificate from an unknown CA",
			server: serverConfig(p.hub, p.ca),
			client: clientConfig(rogueSite, p.ca, p.serverName),
			serverWants: []string{`client certificate CN="rogue-site" was signed by an unknown authority`,
				`issuer CN="Rogue CA"`, `trusted: CN="Partners CA"`, "sha256:"},
			clientWants: []string{"the server rejected our certificate", "unknown certificate authority"},
		},
		{
			name:   "server certificate from an unknown CA",
			server: serverConfig(rogueHub, p.ca),
			client: clientConfig(p.site, p.ca, p.serverName),
			clientWants: []string{`server certificate CN="evil-hub" was signed by an unknown authority`,
				`issuer CN="Rogue CA"`, `trusted: CN="Partners CA"`},
			serverWants: []string{"the client rejected our certificate"},
		},
		{
			name:   "expired server certificate",
			server: serverConfig(expiredHub, p.ca),
			client: clientConfig(p.site, p.ca, p.serverName),
			clientWants: []string{`server certificate CN="hub" expired 3h12m ago`,
				"not after " + expiredHub.Cert.NotAfter.UTC().Format(time.RFC3339), "local clock", "renew it", "NTP"},
			serverWants: []string{"the client rejected our certificate"},
		},
		{
			name:        "expired client certificate",
			server:      serverConfig(p.hub, p.ca),
			client:      clientConfig(expiredSite, p.ca, p.serverName),
			serverWants: []string{`client certificate CN="site-a" expired 1d2h ago`, "renew it"},
			clientWants: []string{"the server rejected our certificate", "expired"},
		},
		{
			name:        "server certificate not valid yet",
			server:      serverConfig(futureHub, p.ca),
			client:      clientConfig(p.site, p.ca, p.serverName),
			clientWants: []string{`server certificate CN="hub" is not valid yet`, "valid from " + futureHub.Cert.NotBefore.UTC().Format(time.RFC3339), "clock"},
			serverWants: []string{"the client rejected our certificate"},
		},
		{
			name:   "wrong server name",
			server: serverConfig(p.hub, p.ca),
			client: clientConfig(p.site, p.ca, "erp.example.com"),
			clientWants: []string{`server certificate CN="hub" is not valid for "erp.example.com"`,
				"it names DNS:hub.example.com", "set server_name", `or issue a certificate for "erp.example.com"`},
			serverWants: []string{"the client rejected our certificate"},
		},
		{
			name:   "server dialled by IP address, certificate with DNS names only",
			server: serverConfig(p.hub, p.ca),
			client: clientConfig(p.site, p.ca, "10.0.0.5"),
			clientWants: []string{`server certificate CN="hub" is not valid for "10.0.0.5"`,
				"it names DNS:hub.example.com", "set server_name to one of these, or issue one with --ip 10.0.0.5 (postern pki issue or sign): a server dialled by IP address needs the address as an IP name, not --dns"},
			serverWants: []string{"the client rejected our certificate"},
		},
		{
			name:   "TLS 1.2 client, TLS 1.3 server",
			server: serverConfig(p.hub, p.ca),
			client: func() *tls.Config {
				c := clientConfig(p.site, p.ca, p.serverName)
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			}(),
			clientWants: []string{"the server refused our TLS version", "min_version"},
			serverWants: []string{"no common TLS version with the client", "TLS 1.2", "min_version"},
		},
		{
			name: "TLS 1.3 client, TLS 1.2 server",
			server: func() *tls.Config {
				c := serverConfig(p.hub, p.ca)
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			}(),
			client:      clientConfig(p.site, p.ca, p.serverName),
			clientWants: []string{"the server refused our TLS version", "min_version"},
			serverWants: []string{"no common TLS version with the client", "TLS 1.3", "min_version"},
		},
		{
			name:   "not a Postern client (ALPN)",
			server: serverConfig(p.hub, p.ca),
			client: func() *tls.Config {
				c := clientConfig(p.site, p.ca, p.serverName)
				c.NextProtos = []string{"h2"}
				return c
			}(),
			clientWants: []string{"the server does not speak postern/1", "Postern agent"},
			serverWants: []string{"the client does not speak postern/1 (ALPN)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverErr, clientErr := handshake(t, tt.server, tt.client)
			wantExplained(t, "server", serverErr, trust.SideServer, p.trusted, tt.serverWants...)
			wantExplained(t, "client", clientErr, trust.SideClient, p.trusted, tt.clientWants...)
		})
	}
}

func TestExplainNotTLS(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name  string
		data  []byte
		wants []string
	}{
		{"plain HTTP", []byte("GET /metrics HTTP/1.1\r\nHost: hub\r\n\r\n"), []string{"the client sent a plain HTTP request, not TLS"}},
		{"HTTP/2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), []string{"plain HTTP"}},
		{"SSH", []byte("SSH-2.0-OpenSSH_9.6\r\n"), []string{"the client speaks SSH, not TLS"}},
		{"binary", []byte{0, 1, 2, 3, 4, 5, 6, 7}, []string{"the client is not speaking TLS (first bytes 0001020304)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := rawToServer(t, serverConfig(p.hub, p.ca), tt.data, handshakeWait)
			var rhe tls.RecordHeaderError
			if !errors.As(err, &rhe) {
				t.Fatalf("server error %v (%T), want a tls.RecordHeaderError", err, err)
			}
			wantExplained(t, "server", err, trust.SideServer, p.trusted, tt.wants...)
		})
	}
}

func TestExplainClosedAndSilent(t *testing.T) {
	p := newPKI(t)
	t.Run("client hangs up", func(t *testing.T) {
		err := rawToServer(t, serverConfig(p.hub, p.ca), nil, handshakeWait)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("server error %v, want EOF", err)
		}
		wantExplained(t, "server", err, trust.SideServer, p.trusted, "the client closed the connection during the TLS handshake")
	})
	t.Run("client says nothing", func(t *testing.T) {
		err := rawToServer(t, serverConfig(p.hub, p.ca), nil, 50*time.Millisecond)
		wantExplained(t, "server", err, trust.SideServer, p.trusted, "the client did not complete the TLS handshake in time")
	})
	t.Run("server hangs up", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(handshakeWait))
		err = tls.Client(c, clientConfig(p.site, p.ca, p.serverName)).Handshake()
		wantExplained(t, "client", err, trust.SideClient, p.trusted, "the server closed the connection during the TLS handshake")
	})
	if got := trust.Explain(nil, trust.SideClient, nil, time.Now()); got != "" {
		t.Errorf("Explain(nil) = %q, want empty", got)
	}
}
