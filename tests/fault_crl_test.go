//go:build unix

package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// faultPKI is a `postern pki` CA folder with a hub and a site certificate.
type faultPKI struct {
	dir              string
	ca, crl          string
	hubCert, hubKey  string
	siteCert, siteKy string
}

func faultNewPKI(t *testing.T) *faultPKI {
	t.Helper()
	dir := t.TempDir()
	p := &faultPKI{dir: dir, ca: filepath.Join(dir, "pki", "ca.crt"), crl: filepath.Join(dir, "pki", "ca.crl"),
		hubCert: filepath.Join(dir, "hub.crt"), hubKey: filepath.Join(dir, "hub.key"),
		siteCert: filepath.Join(dir, "site.crt"), siteKy: filepath.Join(dir, "site.key")}
	p.run(t, "init", "--cn", "Fault Suite CA")
	p.run(t, "issue", "--usage", "server", "--cn", "hub", "--dns", "hub.test", "--ip", "127.0.0.1", "--out", filepath.Join(dir, "hub"))
	p.run(t, "issue", "--usage", "client", "--cn", "site-a", "--dns", "site-a.test", "--out", filepath.Join(dir, "site"))
	return p
}

func (p *faultPKI) run(t *testing.T, action string, args ...string) {
	t.Helper()
	cmd := exec.Command(e2eBinary(t), append([]string{"pki", action, "--dir", filepath.Join(p.dir, "pki")}, args...)...)
	cmd.Dir = p.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postern pki %s %s: %v\n%s", action, strings.Join(args, " "), err, out)
	}
}

// TestFaultRevokeRawPeer: a mux = false peer (plain TLS with a client
// certificate, as stunnel or HAProxy speak) is in the middle of a transfer
// when its certificate is revoked (`postern pki revoke`, then SIGHUP to
// the hub). Its live connection must be closed within seconds, and as a
// cut: the target sees a reset, and so does the peer's TLS connection.
// The peer is a Go TLS client, and stunnel4 when it is installed.
func TestFaultRevokeRawPeer(t *testing.T) {
	for _, peer := range []string{"go-tls", "stunnel"} {
		t.Run(peer, func(t *testing.T) {
			t.Parallel()
			e2eBinary(t)
			var stunnel string
			if peer == "stunnel" {
				var err error
				if stunnel, err = exec.LookPath("stunnel4"); err != nil {
					if stunnel, err = exec.LookPath("stunnel"); err != nil {
						if os.Getenv("CI") == "true" {
							t.Fatal("stunnel4 is not installed (Debian package stunnel4); CI must install it")
						}
						t.Skip("stunnel4 is not installed (Debian package stunnel4)")
					}
				}
			}
			pki := faultNewPKI(t)
			target := faultNewTarget(t)
			hubConf := fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"

[tls]
cert = %q
key = %q
ca = %q
crl = [%q]

[[server]]
listen = "127.0.0.1:0"
mux = false
service = "data"

%s`, pki.hubCert, pki.hubKey, pki.ca, pki.crl, e2eServiceTOML("data", target.Addr, "cn:site-a"))
			hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, pki.dir, "hub", hubConf))
			hubAddr := hub.serverAddr(t)

			var conn net.Conn
			if peer == "go-tls" {
				conn = faultRawTLS(t, pki, hubAddr)
			} else {
				conn = faultStunnel(t, stunnel, pki, hubAddr)
			}
			id := faultNextID.Add(1)
			down := make(chan faultResult, 1)
			go func() {
				down <- faultTransferConn(conn, faultSpec{ID: id, Down: 8 << 20, Action: faultActHold, At: 1 << 20, Timeout: 60 * time.Second}, faultResult{ID: id}, time.Now())
			}()
			target.waitHeld(t, id, 10*time.Second)

			pki.run(t, "revoke", pki.siteCert)
			revoked := time.Now()
			hub.signal(t, syscall.SIGHUP)
			r := faultWait(t, down, 10*time.Second)
			t.Logf("the revoked peer's connection ended %s after the revocation: %v", time.Since(revoked).Round(time.Millisecond), r)
			tr := target.result(t, id, 10*time.Second)
			if tr.Class != faultReset {
				t.Errorf("target: the revoked peer's transfer ended %s (%v); want cut-and-reset", tr.Class, tr.Err)
			}
			switch {
			case peer == "go-tls" && r.Class != faultReset:
				t.Errorf("the revoked peer's TLS connection: %v; want cut-and-reset (ECONNRESET)", r)
			case r.Class == faultComplete:
				t.Errorf("through stunnel: %v; want the transfer cut", r)
			case r.Class.bad():
				// Postern cut the TLS connection with a reset; how stunnel
				// then closes its own application side is stunnel's
				// choice (in inetd mode a socket pair, which cannot carry
				// a reset). The target's reset above is Postern's promise.
				t.Logf("through stunnel the application saw %v: stunnel's own close", r)
			}
		})
	}
}

// faultRawTLS dials the hub's mux = false server as a plain TLS client
// with the site's certificate.
func faultRawTLS(t *testing.T, pki *faultPKI, addr string) net.Conn {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.siteCert, pki.siteKy)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(pki.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "hub.test"})
	if err != nil {
		t.Fatalf("plain TLS client to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// faultStunnel runs stunnel as the raw TLS client in inetd mode on one
// end of a loopback TCP connection and returns the other end: the
// application's side of the peer.
func faultStunnel(t *testing.T, bin string, pki *faultPKI, addr string) net.Conn {
	t.Helper()
	conf := filepath.Join(pki.dir, "stunnel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`foreground = yes
pid =
debug = 4
client = yes
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkHost = hub.test
`, addr, pki.siteCert, pki.siteKy, pki.ca)), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	side, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := side.(*net.TCPConn).File()
	side.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, conf)
	cmd.Stdin, cmd.Stdout = f, f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stunnel: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() || testing.Verbose() {
			t.Logf("stunnel output:\n%s", stderr.String())
		}
	})
	return app
}
