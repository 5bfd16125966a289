package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/wire"
)

// Helpers for the certificate tests (cert_*_test.go).

// writeCRL writes a PEM CRL of ca to path that revokes serials and is next
// updated at next.
func writeCRL(t testing.TB, ca *testca.CA, path string, next time.Time, serials ...*big.Int) {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(time.Now().UnixNano()),
		ThisUpdate: next.Add(-7 * 24 * time.Hour),
		NextUpdate: next,
	}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute), ReasonCode: 1, // key compromise
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

// withServerKeys adds lines to the hub's [[server]] table.
func withServerKeys(toml, lines string) string {
	return strings.Replace(toml, "[[server]]\n", "[[server]]\n"+lines+"\n", 1)
}

// withClientKeys adds lines to the site's [[client]] table; a key the
// table already has is replaced.
func withClientKeys(toml, lines string) string {
	for _, l := range strings.Split(lines, "\n") {
		key, _, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		var kept []string
		for _, old := range strings.Split(toml, "\n") {
			if k, _, ok := strings.Cut(old, "="); !ok || strings.TrimSpace(k) != strings.TrimSpace(key) {
				kept = append(kept, old)
			}
		}
		toml = strings.Join(kept, "\n")
	}
	return strings.Replace(toml, "[[client]]\n", "[[client]]\n"+lines+"\n", 1)
}

// rawHandshake dials addr with cfg and reads once, the way a TLS 1.3
// client learns that the server refused it. It returns the error.
func rawHandshake(t testing.TB, addr string, cfg *tls.Config) error {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(nc, cfg)
	if err := c.Handshake(); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

// siteCert loads the site's certificate for a raw client.
func siteCert(t testing.TB, p *pki) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.site.Cert, p.site.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serverSerial returns the serial of the certificate the server at addr
// presents in a new handshake.
func serverSerial(t testing.TB, p *pki, addr string) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test",
		Certificates: []tls.Certificate{siteCert(t, p)}, NextProtos: []string{wire.ALPN}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// caPEM is a self-signed CA certificate that expires at notAfter.
func caPEM(t testing.TB, cn string, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
