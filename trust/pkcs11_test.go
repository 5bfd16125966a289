package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/internal/softhsm"
	"github.com/postern-tunnel/postern/internal/testca"
)

// tokenEndpoint makes a key of kind inside the token under label, has ca
// certify it and returns Files with the certificate in a file and the key
// as a pkcs11: URI.
func tokenEndpoint(t *testing.T, h *softhsm.HSM, ca *testca.CA, token, label, kind string, o testca.Options) (Files, *testca.Leaf) {
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
	dir := t.TempDir()
	f := Files{Cert: filepath.Join(dir, label+".crt"), Key: uri, CA: filepath.Join(dir, "ca.crt"), MinVersion: "1.3"}
	testca.WriteFile(t, f.Cert, leaf.CertPEM)
	testca.WriteFile(t, f.CA, ca.PEM)
	return f, leaf
}

// handshake runs a TLS handshake over loopback between a server with hub
// and a client with site, and returns the client's view of it.
func handshake(t *testing.T, hub, site *Credentials) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(hub))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		served <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), ClientConfig(site, "hub.test"))
	if err != nil {
		<-served
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	if err := <-served; err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// TestTokenKeysHandshake: the hub's ECDSA key and the site's RSA key are in
// two SoftHSM2 tokens; a mutual TLS handshake signs with both (TLS 1.3, so
// the RSA key signs with PSS inside the token).
func TestTokenKeysHandshake(t *testing.T) {
	h := softhsm.New(t, "hub-token", "site-token")
	ca := testca.New(t, "Partners CA")
	hubFiles, hubLeaf := tokenEndpoint(t, h, ca, "hub-token", "hub", "ecdsa-p256", testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	siteFiles, siteLeaf := tokenEndpoint(t, h, ca, "site-token", "site-a", "rsa-2048", testca.Options{CN: "site-a"})
	hm, err := LoadMaterial(hubFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := hm.Cert.PrivateKey.(crypto.Signer).Public().(*ecdsa.PublicKey); !ok {
		t.Fatalf("hub key is %T", hm.Cert.PrivateKey)
	}
	sm, err := LoadMaterial(siteFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sm.Cert.PrivateKey.(crypto.Signer).Public().(*rsa.PublicKey); !ok {
		t.Fatalf("site key is %T", sm.Cert.PrivateKey)
	}
	if _, isFile := sm.Cert.PrivateKey.(*rsa.PrivateKey); isFile {
		t.Fatal("site key is a software key, not the token's")
	}
	cs, err := handshake(t, NewCredentials(hm), NewCredentials(sm))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if cs.Version != tls.VersionTLS13 || !cs.PeerCertificates[0].Equal(hubLeaf.Cert) {
		t.Fatalf("version %x, peer %s", cs.Version, cs.PeerCertificates[0].Subject)
	}
	_ = siteLeaf
}

// TestTokenReload: a key in a token reloads like a file: nothing changes
// while the certificate is the same, a new certificate for the token key is
// taken, and a certificate for another key is refused with the old
// material kept.
func TestTokenReload(t *testing.T) {
	h := softhsm.New(t, "postern")
	ca := testca.New(t, "CA")
	f, leaf := tokenEndpoint(t, h, ca, "postern", "site-a", "ecdsa-p256", testca.Options{CN: "site-a"})
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(m)
	if changed, err := c.Reload(); changed || err != nil {
		t.Fatalf("unchanged: changed=%v err=%v", changed, err)
	}
	renewed := ca.Issue(t, testca.Options{CN: "site-a", Key: leaf.Key})
	testca.WriteFile(t, f.Cert, renewed.CertPEM)
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatalf("renewed certificate: changed=%v err=%v", changed, err)
	}
	if !c.Load().Leaf.Equal(renewed.Cert) {
		t.Fatal("renewed certificate not in use")
	}
	other := ca.Issue(t, testca.Options{CN: "site-a"})
	testca.WriteFile(t, f.Cert, other.CertPEM)
	changed, err := c.Reload()
	if changed || err == nil || !strings.Contains(err.Error(), `key pkcs11:token=postern;object=site-a (token "postern") does not match certificate `+f.Cert) {
		t.Fatalf("certificate for another key: changed=%v err=%v", changed, err)
	}
	if !c.Load().Leaf.Equal(renewed.Cert) {
		t.Fatal("a failed reload replaced the material")
	}
}

// TestTokenCertificate: the certificate may be in the token too.
func TestTokenCertificate(t *testing.T) {
	h := softhsm.New(t, "postern")
	ca := testca.New(t, "CA")
	f, leaf := tokenEndpoint(t, h, ca, "postern", "hub", "ecdsa-p384", testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	u, _ := hsm.ParseURI(f.Key)
	if err := hsm.ImportCertificate(u, leaf.Cert); err != nil {
		t.Fatal(err)
	}
	f.Cert = h.URI("postern", "hub")
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Leaf.Equal(leaf.Cert) {
		t.Fatal("certificate from the token differs")
	}
	f.Cert = h.URI("postern", "nosuch")
	if _, err := LoadMaterial(f); err == nil || !strings.Contains(err.Error(), `no certificate with label "nosuch" in token "postern"`) {
		t.Fatalf("missing certificate: %v", err)
	}
}
