package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// TestDialTimeoutCoversTheWholeDial: dial_timeout bounds the connect, the
// TLS handshake and the first ping together. A server that takes most of
// the timeout to finish its handshake and then never answers the ping
// makes the dial fail one dial_timeout after it began, not two.
func TestDialTimeoutCoversTheWholeDial(t *testing.T) {
	const timeout = 2 * time.Second
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		select { // a slow server: most of the timeout before its handshake
		case <-time.After(timeout * 7 / 10):
		case <-stop:
			return
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		tc := tls.Server(c, &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{hub.Cert.Raw}, PrivateKey: hub.Key}},
			ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: roots,
			NextProtos: []string{wire.ALPN},
		})
		if tc.Handshake() != nil {
			return
		}
		go io.Copy(io.Discard, tc) // never answers the ping
		<-stop
	}()

	var cfg config.Config
	cfg.SetDefaults()
	m, err := trust.LoadMaterial(trust.Files{Cert: site.Cert, Key: site.Key, CA: site.CA, MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	c := &Client{Name: "hub", Servers: []string{ln.Addr().String()}, ServerName: "hub.test",
		Creds: trust.NewCredentials(m), Dial: d.DialContext, DialTimeout: timeout,
		Options: tunnel.OptionsOf(cfg.Tunnel), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Now()
	tun, err := c.dial(context.Background(), ln.Addr().String())
	elapsed := time.Since(start)
	if err == nil {
		tun.Close()
		t.Fatal("dial succeeded against a server that never answers the ping")
	}
	if !strings.Contains(err.Error(), "did not answer the first ping within dial_timeout (2s)") {
		t.Errorf("error %q does not say the peer did not answer", err)
	}
	// One timeout plus scheduling slack; two would be 2× the timeout.
	if elapsed > timeout*14/10 {
		t.Errorf("dial gave up after %s, want about dial_timeout (%s): the timeout applied twice", elapsed.Round(time.Millisecond), timeout)
	}
}
