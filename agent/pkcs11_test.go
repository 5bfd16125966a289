package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/internal/softhsm"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// tokenLeaf makes a key of kind inside token under label and a
// certificate for it; it returns the certificate file and the key's URI.
func tokenLeaf(t *testing.T, h *softhsm.HSM, ca *testca.CA, dir, token, label, kind string, o testca.Options) (testca.Files, *testca.Leaf) {
	t.Helper()
	uri := h.URI(token, label)
	u, err := hsm.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hsm.Generate(u, kind)
	if err != nil {
		t.Fatal(err)
	}
	o.Key = key.Signer
	leaf := ca.Issue(t, o)
	f := testca.Files{Cert: filepath.Join(dir, label+".crt"), Key: uri, CA: filepath.Join(dir, label+"-ca.crt")}
	testca.WriteFile(t, f.Cert, leaf.CertPEM)
	testca.WriteFile(t, f.CA, ca.PEM)
	return f, leaf
}

// TestTokenKeysTunnel: the hub's ECDSA key is in one SoftHSM2 token and the
// site's RSA key in another. The agents connect, a SHA-256-checked transfer
// crosses the tunnel, and a renewed hub certificate for the same token key
// is picked up without dropping the tunnel.
func TestTokenKeysTunnel(t *testing.T) {
	h := softhsm.New(t, "hub-token", "site-token")
	dir := t.TempDir()
	ca := testca.New(t, "Test Partners CA")
	hubFiles, hubLeaf := tokenLeaf(t, h, ca, dir, "hub-token", "hub", "ecdsa-p256", testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	siteFiles, _ := tokenLeaf(t, h, ca, dir, "site-token", "site-a", "rsa-2048", testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	p := &pki{ca: ca, hub: hubFiles, site: siteFiles}

	echo := testnet.Listen(t)
	testnet.Serve(t, echo, testnet.Echo)
	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, serviceTOML("echo", echo.Addr().String(), "cn:site-a")), `reload_interval = "50ms"`))
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, addr, "echo"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	transfer := func() {
		t.Helper()
		data := make([]byte, 1<<20)
		rand.Read(data)
		c := testnet.Dial(t, site.ForwardAddrs()[0].String())
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) || !bytes.Equal(got, data) {
			t.Fatalf("echo through the tunnel: %d bytes back, content differs", len(got))
		}
	}
	transfer()

	renewed := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, Key: hubLeaf.Key})
	testca.WriteFile(t, hubFiles.Cert, renewed.CertPEM)
	hub.log.WaitFor(t, 10*time.Second, "reloaded certificate material", "serial "+renewed.Cert.SerialNumber.Text(16))
	transfer()
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("the site connected %d times, want once: rotation must not drop the tunnel", n)
	}
}
