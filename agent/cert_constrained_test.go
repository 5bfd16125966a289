package agent

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	capki "github.com/postern-tunnel/postern/pki"
)

// TestConstrainedPartnerCA: the hub trusts only its own root; partner A
// runs a CA under it that `postern pki intermediate` constrained to
// partner-a.test. A certificate partner A's CA signs for its own name gets
// through; one it signs for another partner's name is refused in the
// handshake, though the hub's allow list names it.
func TestConstrainedPartnerCA(t *testing.T) {
	dir := t.TempDir()
	root, err := capki.NewCA(capki.InitOptions{CommonName: "Hub Root", Intermediates: true})
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "root.crt")
	testca.WriteFile(t, rootFile, capki.CertPEM(root.Cert))
	hubCert, hubKey, err := root.Issue(capki.IssueOptions{Usage: capki.UsageServer,
		Names: capki.Names{DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}})
	if err != nil {
		t.Fatal(err)
	}
	partnerKey, err := capki.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.SignIntermediate(partnerKey.Public(), capki.IntermediateOptions{
		CommonName: "Partner A CA", Permit: capki.Constraints{DNS: []string{"partner-a.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	partnerCA := &capki.CA{Cert: inter, Key: partnerKey}

	// Inside the constraint: issued the usual way, chain file and all.
	inCert, inKey, err := partnerCA.Issue(capki.IssueOptions{Usage: capki.UsageClient, Names: capki.Names{DNSNames: []string{"gw.partner-a.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Outside it: `postern pki` refuses, so partner A's CA signs by hand.
	if _, _, err := partnerCA.Issue(capki.IssueOptions{Usage: capki.UsageClient, Names: capki.Names{DNSNames: []string{"gw.partner-b.test"}}}); err == nil {
		t.Fatal("postern pki issued a name outside the intermediate's constraints")
	}
	outCert, outKey := signOutside(t, partnerCA, "gw.partner-b.test")

	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		testca.WriteFile(t, path, data)
		return path
	}
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	p := &pki{hub: testca.Files{Cert: write("hub.crt", hubCert), Key: write("hub.key", hubKey), CA: rootFile}}
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("erp", ln.Addr().String(), "dns:gw.partner-a.test", "dns:gw.partner-b.test")))
	addr := hub.ServerAddrs()[0].String()

	outside := start(t, dir, "outside", siteTOML(&pki{site: testca.Files{Cert: write("out.crt", outCert), Key: write("out.key", outKey), CA: rootFile}}, addr, "erp"))
	hub.log.WaitFor(t, 10*time.Second, "tunnel refused", `DNS name \"gw.partner-b.test\" is not permitted by any constraint`, `issuer CN=\"Partner A CA\"`)
	if got, err := echoOnce(t, outside.ForwardAddrs()[0], "as partner B"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a name outside partner A's constraints: %q, %v; want connection reset", got, err)
	}

	inside := start(t, dir, "inside", siteTOML(&pki{site: testca.Files{Cert: write("in.crt", inCert), Key: write("in.key", inKey), CA: rootFile}}, addr, "erp"))
	inside.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got, err := echoOnce(t, inside.ForwardAddrs()[0], "partner A"); err != nil || got != "partner A" {
		t.Fatalf("a name inside partner A's constraints: %q, %v", got, err)
	}
}

// signOutside has ca sign a client certificate for name directly, as a
// partner's own CA software could, and returns the chain (leaf, then ca)
// and key as PEM.
func signOutside(t *testing.T, ca *capki.CA, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := capki.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = capki.MarshalKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), capki.CertPEM(ca.Cert)...)
	return certPEM, keyPEM
}
