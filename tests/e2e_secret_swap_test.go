//go:build unix

package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/wire"
)

// TestE2ESecretVolumeSwap: the hub binary reads its certificate, key and
// CA from a directory laid out like a Kubernetes Secret volume (NAME →
// ..data/NAME, ..data → a timestamped directory). A renewal swaps ..data
// in one rename and removes the old directory, as the kubelet does. The
// running hub serves the new certificate on the next handshake, with no
// error logged, while a stream that started before the swap keeps echoing.
func TestE2ESecretVolumeSwap(t *testing.T) {
	e2eBinary(t)
	target := e2eServe(t, func(c *net.TCPConn) { testnet.Echo(c) })
	dir := t.TempDir()
	ca := testca.New(t, "E2E Partners CA")
	site := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "site", ca)
	vol := filepath.Join(dir, "tls")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	issue := func() *testca.Leaf {
		return ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	}
	first := issue()
	old := e2eSwapSecret(t, vol, "..2026_12_01_00_00_00.1", "", first, ca)
	certs := &e2eCerts{site: site, hub: testca.Files{
		Cert: filepath.Join(vol, "tls.crt"), Key: filepath.Join(vol, "tls.key"), CA: filepath.Join(vol, "ca.crt")}}

	hubTOML := strings.Replace(e2eHubTOML(certs, "127.0.0.1:0", e2eServiceTOML("echo", target, "cn:site-a")),
		"[tls]\n", "[tls]\nreload_interval = \"100ms\"\n", 1)
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", hubTOML))
	hubAddr := hub.serverAddr(t)
	s := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, "5s", "echo")))
	forward := s.forwardAddr(t, "echo")
	s.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got := e2eServerSerial(t, hubAddr, ca, site); got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("hub presents serial %x, want %x", got, first.Cert.SerialNumber)
	}

	app := testnet.Dial(t, forward)
	app.SetDeadline(time.Now().Add(20 * time.Second))
	echo := func(msg string) {
		t.Helper()
		app.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(app, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q through a stream opened before the swap: %q, %v", msg, buf, err)
		}
	}
	echo("before")

	next := issue()
	e2eSwapSecret(t, vol, "..2026_12_01_01_00_00.2", old, next, ca)
	hub.log.WaitFor(t, 10*time.Second, "reloaded certificate material", "serial="+next.Cert.SerialNumber.Text(16))
	if got := e2eServerSerial(t, hubAddr, ca, site); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after the swap the next handshake presents serial %x, want %x", got, next.Cert.SerialNumber)
	}
	echo("after")
	app.CloseWrite()
	if rest, err := io.ReadAll(app); err != nil || len(rest) != 0 {
		t.Fatalf("stream end: %q, %v; want a clean end", rest, err)
	}
	if strings.Contains(hub.log.String(), "certificate reload failed") {
		t.Errorf("an atomic Secret swap logged a reload failure:\n%s", hub.log.String())
	}
	if n := strings.Count(s.log.String(), `msg="tunnel connected"`); n != 1 {
		t.Errorf("the site connected %d times, want once", n)
	}
}

// e2eSwapSecret publishes leaf and ca's bundle in vol the way the kubelet
// updates a Secret volume, removes the directory old (if any) and returns
// the new directory's name.
func e2eSwapSecret(t testing.TB, vol, ts, old string, leaf *testca.Leaf, ca *testca.CA) string {
	t.Helper()
	if err := os.Mkdir(filepath.Join(vol, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM, "ca.crt": ca.PEM}
	for name, data := range files {
		testca.WriteFile(t, filepath.Join(vol, ts, name), data)
	}
	if err := os.Symlink(ts, filepath.Join(vol, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(vol, name)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(vol, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(vol, old)); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

// e2eServerSerial is the serial of the certificate the server at addr
// presents in a new handshake.
func e2eServerSerial(t testing.TB, addr string, ca *testca.CA, site testca.Files) *big.Int {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(site.Cert, site.Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "hub.test",
		Certificates: []tls.Certificate{cert}, NextProtos: []string{wire.ALPN}})
	if err != nil {
		t.Fatal(fmt.Errorf("handshake with the hub: %w", err))
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}
