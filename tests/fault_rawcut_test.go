//go:build unix

package tests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestFaultRawTLSCut: over mux = false (plain TLS to or from a peer that
// is not Postern) only TLS close_notify is a clean end. A peer that
// closes TCP without it — a crashed or killed stunnel — cut the transfer,
// and the plaintext side must see a reset. Both roles: a hub's mux = false
// server with a Go TLS client, and a site's mux = false client with a Go
// TLS server.
func TestFaultRawTLSCut(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		e2eBinary(t)
		dir := t.TempDir()
		certs := e2eNewCerts(t, dir)
		target := faultNewTarget(t)
		hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", faultConf("hub", certs.hub, "5s",
			"[[server]]\nlisten = \"127.0.0.1:0\"\nmux = false\nservice = \"data\"\n",
			e2eServiceTOML("data", target.Addr, "cn:site-a"))))
		addr := hub.serverAddr(t)
		pki := &faultPKI{ca: certs.site.CA, siteCert: certs.site.Cert, siteKy: certs.site.Key}

		// With close_notify: whole and clean.
		if r := faultTransferConn(faultRawTLS(t, pki, addr), faultSpec{Up: 1 << 20, Down: 1 << 20, Timeout: 20 * time.Second}, faultResult{}, time.Now()); r.Class != faultComplete {
			t.Errorf("raw TLS transfer ended with close_notify: %v; want complete", r)
		}

		// Without: 1 MiB of a 4 MiB upload, then TCP FIN with no
		// close_notify.
		conn := faultRawTLS(t, pki, addr).(*tls.Conn)
		id := faultNextID.Add(1)
		seed := rand.Uint64()
		var hdr [faultHeaderSize]byte
		for i, v := range []uint64{id, 4 << 20, 0, seed, 0, 0} {
			binary.BigEndian.PutUint64(hdr[8*i:], v)
		}
		data := make([]byte, 1<<20)
		faultData(seed, 'u').Read(data)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(append(hdr[:], data...)); err != nil {
			t.Fatal(err)
		}
		conn.NetConn().Close() // TCP FIN, no close_notify
		if tr := target.result(t, id, 10*time.Second); tr.Class != faultReset {
			t.Errorf("target: a raw TLS peer that closed TCP without close_notify after 1 of 4 MiB: %s (%v); want cut-and-reset", tr.Class, tr.Err)
		}
	})

	t.Run("client", func(t *testing.T) {
		t.Parallel()
		e2eBinary(t)
		dir := t.TempDir()
		certs := e2eNewCerts(t, dir)
		payload := make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{1}).Read(payload)
		notify := make(chan bool, 2) // per connection: end with close_notify?
		srv := faultTLSServer(t, certs, func(c *tls.Conn) {
			clean := <-notify
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(payload); err != nil {
				return
			}
			if clean {
				c.CloseWrite() // close_notify
				io.Copy(io.Discard, c)
				return
			}
			c.NetConn().Close() // TCP FIN, no close_notify
		})
		site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", faultConf("site-a", certs.site, "5s",
			faultClient(srv, "mux = false"), faultForward("legacy", "hub"))))
		forward := site.forwardAddr(t, "legacy")

		for _, clean := range []bool{true, false} {
			notify <- clean
			app := testnet.Dial(t, forward)
			app.SetDeadline(time.Now().Add(15 * time.Second))
			if clean {
				app.CloseWrite()
			}
			got, err := io.ReadAll(app)
			switch {
			case clean && (err != nil || !bytes.Equal(got, payload)):
				t.Errorf("raw TLS server ended with close_notify: read %d of %d bytes (equal %v), %v; want all and a clean end",
					len(got), len(payload), bytes.Equal(got, payload), err)
			case !clean && !faultIsReset(err):
				t.Errorf("raw TLS server closed TCP without close_notify after 1 MiB: the application read %d bytes and %v; want ECONNRESET", len(got), err)
			}
		}
	})
}

// faultTLSServer is a plain mutual-TLS server (as stunnel would be) with
// the hub's certificate, requiring a client certificate from the CA.
func faultTLSServer(t *testing.T, certs *e2eCerts, handle func(c *tls.Conn)) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certs.hub.Cert, certs.hub.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(certs.hub.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// Like stunnel, it refuses a client that offers only postern/1 (a
	// tunnel handshake): only the raw connections reach handle.
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"http/1.1"}}
	return e2eServe(t, func(c *net.TCPConn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		handle(tc)
	})
}
