package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/server"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// refusalHub is a Postern hub on loopback for the refusal-reason tests.
type refusalHub struct {
	addr    string
	logs    *testnet.LogBuffer
	tunnels atomic.Int32 // tunnels handed to the agent
	refused chan server.Cause
}

func startRefusalHub(t *testing.T, ca *testca.CA, crl []byte, peer ...string) *refusalHub {
	t.Helper()
	return startHubWith(t, ca, crl, peer, false)
}

// startHubWith starts a hub; raw makes it a mux = false server.
func startHubWith(t testing.TB, ca *testca.CA, crl []byte, peer []string, raw bool) *refusalHub {
	t.Helper()
	dir := t.TempDir()
	files := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
	tf := trust.Files{Cert: files.Cert, Key: files.Key, CA: files.CA, MinVersion: "1.2"}
	if crl != nil {
		tf.CRL = []string{filepath.Join(dir, "ca.crl")}
		testca.WriteFile(t, tf.CRL[0], pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}))
	}
	m, err := trust.LoadMaterial(tf)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := identity.ParseList(peer)
	if err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	cfg.SetDefaults()
	h := &refusalHub{logs: &testnet.LogBuffer{}, refused: make(chan server.Cause, 64)}
	srv := &server.Server{
		Creds: trust.NewCredentials(m), Peer: peers,
		HandshakeTimeout: 10 * time.Second, MaxHandshakes: 64, MaxHandshakesPerAddress: 16,
		Options: tunnel.OptionsOf(cfg.Tunnel),
		Log:     slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handle: func(tun *tunnel.Tunnel) {
			h.tunnels.Add(1)
			tun.Close()
		},
		Refused: func(c server.Cause) {
			select {
			case h.refused <- c:
			default: // a benchmark refuses more than it reads
			}
		},
	}
	if raw {
		srv.Raw = func(c *tls.Conn) {
			h.tunnels.Add(1)
			c.Close()
		}
	}
	ln := testnet.Listen(t)
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

// reason is the reason of the hub's "tunnel refused" log line.
func (h *refusalHub) reason(t *testing.T) string {
	t.Helper()
	line := h.logs.WaitFor(t, 5*time.Second, `"msg":"tunnel refused"`)
	var rec struct{ Cause, Reason string }
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Cause != string(server.CauseCertificate) {
		t.Errorf("hub logged cause %q, want %q", rec.Cause, server.CauseCertificate)
	}
	return rec.Reason
}

// refusalSite is a [[client]] with leaf's certificate, dialing h at TLS
// version.
func refusalSite(t testing.TB, h *refusalHub, ca *testca.CA, leaf *testca.Leaf, version uint16) *Client {
	t.Helper()
	files := leaf.Write(t, t.TempDir(), "site", ca)
	m, err := trust.LoadMaterial(trust.Files{Cert: files.Cert, Key: files.Key, CA: files.CA, MinVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	creds := trust.NewCredentials(m)
	var cfg config.Config
	cfg.SetDefaults()
	var d net.Dialer
	return &Client{
		Name: "hub", Servers: []string{h.addr}, ServerName: "hub.test", Creds: creds,
		TLSConfig: func(name string) *tls.Config {
			c := trust.ClientConfig(creds, name)
			c.MinVersion, c.MaxVersion = version, version
			return c
		},
		Dial: d.DialContext, DialTimeout: 5 * time.Second, Options: tunnel.OptionsOf(cfg.Tunnel),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// TestRefusalReason: for each way a hub refuses a client whose chain
// verifies to a CA it trusts, the client's error is the hub's logged
// reason word for word, and the client never gets a tunnel; the hub's
// refusal log and counts are as before. TLS 1.3 (refusal seen on the first
// read) and 1.2 (refusal in the handshake) alike.
func TestRefusalReason(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	now := time.Now()
	revoked := ca.Issue(t, testca.Options{CN: "site-a"})
	crl := func(t *testing.T) []byte {
		tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.Cert.SerialNumber, RevocationTime: now.Add(-time.Minute), ReasonCode: 1}}}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	other := sha256.Sum256([]byte("another partner's certificate"))
	cases := []struct {
		name  string
		leaf  *testca.Leaf
		crl   bool
		peer  []string
		code  wire.RefusalCode
		words string
	}{
		{"expired", ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-30 * time.Minute)}),
			false, nil, wire.RefusalExpired, `client certificate CN="site-a" expired 30m`},
		{"not yet valid", ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(3 * time.Hour), NotAfter: now.Add(48 * time.Hour)}),
			false, nil, wire.RefusalNotYetValid, `client certificate CN="site-a" is not valid yet`},
		{"revoked", revoked, true, nil, wire.RefusalRevoked, `client certificate CN="site-a" was revoked`},
		{"identity not allowed", ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}),
			false, []string{"dns:partner-b.test", "cn:Partner C"}, wire.RefusalIdentity, `client certificate CN="site-a" matches none of peer = [`},
		{"pin mismatch", ca.Issue(t, testca.Options{CN: "site-a"}),
			false, []string{"sha256:" + hex.EncodeToString(other[:])}, wire.RefusalIdentity, `client certificate CN="site-a" matches none of peer = [`},
	}
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, tc := range cases {
			t.Run(tls.VersionName(version)+"/"+tc.name, func(t *testing.T) {
				var der []byte
				if tc.crl {
					der = crl(t)
				}
				h := startRefusalHub(t, ca, der, tc.peer...)
				c := refusalSite(t, h, ca, tc.leaf, version)
				_, err := c.dial(context.Background(), h.addr)
				if err == nil {
					t.Fatal("dial succeeded")
				}
				hubReason := h.reason(t)
				if !strings.Contains(hubReason, tc.words) {
					t.Errorf("hub reason %q lacks %q", hubReason, tc.words)
				}
				want := trust.RefusedMessage(wire.Refusal{Reason: hubReason})
				if tc.peer != nil {
					// The hub's log lists the identities it accepts; the
					// client learns only that it matched none of them.
					for _, p := range tc.peer {
						if !strings.Contains(hubReason, p) || strings.Contains(err.Error(), p) {
							t.Errorf("peer %q: in hub reason %v (want true), in client error %v (want false)", p, strings.Contains(hubReason, p), strings.Contains(err.Error(), p))
						}
					}
					want = trust.RefusedMessage(wire.Refusal{Reason: trust.ExplainToPeer(&trust.PinError{Cert: tc.leaf.Cert, Pins: tc.peer}, now)})
				}
				if got := err.Error(); got != want {
					t.Errorf("client error:\n  %s\nwant the hub's reason:\n  %s", err, want)
				}
				if cause := <-h.refused; cause != server.CauseCertificate {
					t.Errorf("refusal counted as %q", cause)
				}
				h.logs.WaitFor(t, 5*time.Second, `"msg":"refusal reason sent"`, `"refusal":"`+tc.code.String()+`"`)
				// Asking is not one more refusal: one counted, one line.
				if n := len(h.refused); n != 0 {
					t.Errorf("%d more refusals counted after the reason was sent", n)
				}
				if n := strings.Count(h.logs.String(), `"msg":"tunnel refused"`); n != 1 {
					t.Errorf("hub logged %d refusals, want 1", n)
				}
				if n := h.tunnels.Load(); n != 0 {
					t.Errorf("a refused client got %d tunnels", n)
				}
			})
		}
	}
}

// TestRefusalReasonUnknownCA: a client whose chain does not lead to a CA
// the hub trusts learns what it learned before (the TLS alert), even when
// it asks for a reason itself.
func TestRefusalReasonUnknownCA(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	stranger := testca.New(t, "Stranger CA")
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			h := startRefusalHub(t, ca, nil)
			// The client trusts the hub's CA; its own certificate is the stranger's.
			leaf := stranger.Issue(t, testca.Options{CN: "site-x"})
			files := leaf.Write(t, t.TempDir(), "site", stranger)
			testca.WriteFile(t, files.CA, ca.PEM)
			m, err := trust.LoadMaterial(trust.Files{Cert: files.Cert, Key: files.Key, CA: files.CA, MinVersion: "1.2"})
			if err != nil {
				t.Fatal(err)
			}
			c := refusalSite(t, h, ca, ca.Issue(t, testca.Options{CN: "unused"}), version)
			c.Creds = trust.NewCredentials(m)
			tlsConfig := func(name string) *tls.Config {
				cfg := trust.ClientConfig(c.Creds, name)
				cfg.MinVersion, cfg.MaxVersion = version, version
				return cfg
			}
			c.TLSConfig = tlsConfig
			_, err = c.dial(context.Background(), h.addr)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			const want = "the server rejected our certificate (alert: unknown certificate authority): it does not trust the CA that signed our certificate"
			if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "hub refused") {
				t.Errorf("client error %q, want the alert as before: %q", err, want)
			}
			hubReason := h.reason(t)
			if strings.Contains(err.Error(), hubReason) || strings.Contains(err.Error(), "Partners CA") {
				t.Errorf("client error %q carries the hub's reason %q", err, hubReason)
			}

			// Asking outright gets a TLS alert and nothing else.
			var d net.Dialer
			r, err := AskRefusal(context.Background(), d.DialContext, h.addr, tlsConfig("hub.test"))
			if err == nil || !strings.Contains(err.Error(), "bad certificate") {
				t.Errorf("AskRefusal from an unknown CA = %+v, %v; want a bad certificate alert", r, err)
			}
			if strings.Contains(h.logs.String(), "refusal reason sent") || h.tunnels.Load() != 0 {
				t.Errorf("hub sent a reason or a tunnel to an unknown CA's client; log:\n%s", h.logs)
			}
		})
	}
}

// TestRefusalConnectionServesNothing: on a refusal-reason connection the
// hub sends its message and close_notify, and a client that then speaks
// yamux gets no session; a client the hub accepts is told RefusalNone.
func TestRefusalConnectionServesNothing(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	h := startRefusalHub(t, ca, nil)
	for name, leaf := range map[string]*testca.Leaf{
		"accepted": ca.Issue(t, testca.Options{CN: "site-a"}),
		"expired":  ca.Issue(t, testca.Options{CN: "site-a", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Minute)}),
	} {
		t.Run(name, func(t *testing.T) {
			c := refusalSite(t, h, ca, leaf, tls.VersionTLS13)
			cfg := c.tlsConfig(h.addr, true)
			cfg.NextProtos = []string{wire.RefusalALPN}
			tc, err := tls.Dial("tcp", h.addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			// A yamux ping (version 0, type 2, flag SYN): nothing answers it.
			if _, err := tc.Write([]byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}); err != nil {
				t.Fatal(err)
			}
			r, err := wire.ReadRefusal(tc)
			if err != nil {
				t.Fatal(err)
			}
			if (name == "accepted") != (r.Code == wire.RefusalNone) {
				t.Errorf("refusal %+v", r)
			}
			if n, err := tc.Read(make([]byte, 64)); n != 0 || err != io.EOF {
				t.Errorf("after the refusal message: %d bytes, %v; want close_notify (io.EOF)", n, err)
			}
			if h.tunnels.Load() != 0 {
				t.Error("a refusal-reason connection became a tunnel")
			}
		})
	}
}

// TestAskRefusalOldServer: a server that does not explain refusals (here
// one that speaks only postern/1) leaves the error as it was.
func TestAskRefusalOldServer(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	ln := testnet.Listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, &tls.Config{
				Certificates: []tls.Certificate{{Certificate: [][]byte{hub.Cert.Raw}, PrivateKey: hub.Key}},
				NextProtos:   []string{wire.ALPN}, ClientAuth: tls.RequireAnyClientCert,
			})
			tc.Handshake()
			tc.Close()
		}
	}()
	h := &refusalHub{addr: ln.Addr().String()}
	c := refusalSite(t, h, ca, ca.Issue(t, testca.Options{CN: "site-a"}), tls.VersionTLS13)
	var d net.Dialer
	_, err := AskRefusal(context.Background(), d.DialContext, h.addr, c.tlsConfig(h.addr, true))
	if err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Errorf("AskRefusal of an old server: %v", err)
	}
	alert := &net.OpError{Op: "remote error", Err: tls.AlertError(42)} // bad certificate
	if got := ExplainRefusal(context.Background(), alert, c.Creds, d.DialContext, h.addr, c.tlsConfig(h.addr, true)); got != c.Creds.Explain(alert, trust.SideClient, time.Now()) {
		t.Errorf("ExplainRefusal changed the message: %q", got)
	}
}

// opensslPath finds openssl. CI installs it (.ci/run), so there a missing
// openssl fails the test instead of skipping it.
func opensslPath(t *testing.T) string {
	if p, err := exec.LookPath("openssl"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("openssl is not installed; .ci/run must install it (apt-get install openssl)")
	}
	t.Skip("skipping: openssl is not installed (apt-get install openssl)")
	return ""
}

// TestRefusalOtherClients: TLS clients that are not Postern (a plain Go
// client with or without the postern/1 ALPN, openssl s_client) get the
// alert they got before, and no refusal message.
func TestRefusalOtherClients(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	h := startRefusalHub(t, ca, nil)
	leaf := ca.Issue(t, testca.Options{CN: "site-a", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Minute)})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, alpn := range [][]string{nil, {wire.ALPN}} {
			t.Run(fmt.Sprintf("%s/alpn=%v", tls.VersionName(version), alpn), func(t *testing.T) {
				conn, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Client(conn, &tls.Config{
					Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}},
					RootCAs:      roots, ServerName: "hub.test", NextProtos: alpn, MinVersion: version, MaxVersion: version,
				})
				err = tc.Handshake()
				var n int
				if err == nil { // TLS 1.3: the alert comes on the first read
					n, err = tc.Read(make([]byte, 64))
				}
				if desc, ok := remoteAlertOf(err); n != 0 || !ok || desc != "expired certificate" {
					t.Errorf("got %d bytes, %v; want the alert expired certificate", n, err)
				}
			})
		}
	}

	t.Run("openssl s_client", func(t *testing.T) {
		bin := opensslPath(t)
		files := leaf.Write(t, t.TempDir(), "site", ca)
		for _, v := range []string{"-tls1_3", "-tls1_2"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", h.addr, "-servername", "hub.test", v,
				"-cert", files.Cert, "-key", files.Key, "-CAfile", files.CA, "-verify_return_error", "-ign_eof")
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			cancel()
			if !strings.Contains(string(out), "alert certificate expired") || strings.Contains(string(out), "PRF") {
				t.Errorf("openssl s_client %s: want the alert certificate expired and nothing more; output:\n%s", v, out)
			}
		}
	})
}

// remoteAlertOf is the description of a TLS alert the peer sent.
func remoteAlertOf(err error) (string, bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		return strings.TrimPrefix(op.Err.Error(), "tls: "), true
	}
	return "", false
}

// TestRefusalReasonRaw: a mux = false client refused by a mux = false
// Postern server learns the reason too: with TLS 1.2 from DialRaw, with
// TLS 1.3 from its first read (RefusalReason, as the forward does).
func TestRefusalReasonRaw(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			h := startRawRefusalHub(t, ca, "dns:partner-b.test")
			c := refusalSite(t, h, ca, ca.Issue(t, testca.Options{CN: "site-a"}), version)
			want := "hub refused this agent's certificate: client certificate CN=\"site-a\" matches none of the identities the server accepts"
			tc, err := c.DialRaw(context.Background())
			if err == nil {
				defer tc.Close()
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = tc.Read(make([]byte, 1))
				reason, ok := c.RefusalReason(context.Background(), err, h.addr)
				if !ok {
					t.Fatalf("first read: %v; no refusal reason", err)
				}
				err = errors.New(reason)
			}
			if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "partner-b") {
				t.Errorf("error %q, want it to contain %q", err, want)
			}
			if r := h.reason(t); !strings.Contains(r, "matches none of peer = [dns:partner-b.test]") {
				t.Errorf("hub reason %q", r)
			}
			if n := h.tunnels.Load(); n != 0 {
				t.Errorf("a refused client reached the service %d times", n)
			}
		})
	}
}

// startRawRefusalHub is startRefusalHub for a mux = false server: each
// connection it accepts counts as a tunnel.
func startRawRefusalHub(t *testing.T, ca *testca.CA, peer ...string) *refusalHub {
	return startHubWith(t, ca, nil, peer, true)
}

// TestRefusalReasonInClientLog: a running client logs the hub's reason
// with each failed attempt.
func TestRefusalReasonInClientLog(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	h := startRefusalHub(t, ca, nil, "dns:partner-b.test")
	c := refusalSite(t, h, ca, ca.Issue(t, testca.Options{CN: "site-a"}), tls.VersionTLS13)
	logs := &testnet.LogBuffer{}
	c.Log = slog.New(slog.NewJSONHandler(logs, nil))
	c.Parallel, c.Strategy, c.BackoffMin, c.BackoffMax = 1, Ordered, 50*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	line := logs.WaitFor(t, 5*time.Second, `"msg":"tunnel not connected; retrying"`)
	var rec struct{ Err string }
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	hubReason := h.reason(t)
	want := h.addr + ": " + trust.RefusedMessage(wire.Refusal{Reason: strings.Replace(hubReason,
		"matches none of peer = [dns:partner-b.test]", "matches none of the identities the server accepts (peer; not shown to the client)", 1)})
	if rec.Err != want {
		t.Errorf("client log err:\n  %s\nwant:\n  %s", rec.Err, want)
	}
}

// BenchmarkRefusedDial: what asking for the reason adds to a refused dial
// (TLS 1.3 on loopback): "alert" is a certificate from a CA the hub does
// not trust (the client does not ask), "reason" one the hub's peer does not
// name (the client asks: one more connection and handshake).
//
//	go test -run '^$' -bench RefusedDial -count 6 ./client/
func BenchmarkRefusedDial(b *testing.B) {
	ca := testca.New(b, "Partners CA")
	stranger := testca.New(b, "Stranger CA")
	h := startHubWith(b, ca, nil, []string{"dns:partner-b.test"}, false)
	for _, tc := range []struct {
		name   string
		issuer *testca.CA
	}{{"alert", stranger}, {"reason", ca}} {
		b.Run(tc.name, func(b *testing.B) {
			c := refusalSite(b, h, ca, tc.issuer.Issue(b, testca.Options{CN: "site-a"}), tls.VersionTLS13)
			for b.Loop() {
				_, err := c.dial(context.Background(), h.addr)
				if err == nil || strings.Contains(err.Error(), "hub refused") != (tc.name == "reason") {
					b.Fatalf("dial: %v", err)
				}
			}
		})
	}
}
