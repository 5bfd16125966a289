package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(pki.InitOptions{CommonName: "Test CA"})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func verify(ca *pki.CA, cert *x509.Certificate, usage x509.ExtKeyUsage, at time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at})
	return err
}

func TestInitWritesCAFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := pki.Init(dir, pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA basic constraints: IsCA=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage = %v, want certSign|cRLSign", c.KeyUsage)
	}
	if c.Subject.CommonName != pki.DefaultCAName {
		t.Errorf("CA CN = %q, want %q", c.Subject.CommonName, pki.DefaultCAName)
	}
	if got := c.NotAfter.Sub(c.NotBefore) - pki.ClockSkew; got < pki.DefaultCAValidity-time.Minute || got > pki.DefaultCAValidity+time.Minute {
		t.Errorf("CA validity = %v, want %v", got, pki.DefaultCAValidity)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || c.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("CA key = %s, want ECDSA P-256", pki.KeyDescription(c.PublicKey))
	}
	for _, name := range []string{pki.CertFile, pki.KeyFile, pki.IndexFile, pki.RevokedFile, pki.CRLNumberFile, pki.CRLFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("Init did not write %s: %v", name, err)
		}
	}
	if runtime.GOOS != "windows" {
		checkMode(t, dir, 0o700)
		checkMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, pki.KeyFile))
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("ca.key is not a PKCS#8 PEM \"PRIVATE KEY\"")
	}
	crlPEM, _ := os.ReadFile(filepath.Join(dir, pki.CRLFile))
	crl, err := pki.ParseCRLPEM(crlPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(c); err != nil || len(crl.RevokedCertificateEntries) != 0 {
		t.Errorf("initial CRL: signature %v, %d entries; want a valid empty CRL", err, len(crl.RevokedCertificateEntries))
	}

	if _, err := pki.Init(dir, pki.InitOptions{}); !errors.Is(err, pki.ErrExists) {
		t.Errorf("second Init: err = %v, want ErrExists", err)
	}
	opened, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !opened.Cert.Equal(c) {
		t.Error("Open returned a different certificate")
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %o, want %o", filepath.Base(path), got, want)
	}
}

func TestOpenRefusesMismatchedKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	other := newCA(t)
	keyPEM, _ := pki.MarshalKeyPEM(other.Key)
	if err := os.WriteFile(filepath.Join(dir, pki.KeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := pki.Open(dir)
	if err == nil || !strings.Contains(err.Error(), "does not belong to") {
		t.Errorf("Open with a foreign key: err = %v, want \"does not belong to\"", err)
	}
}

func TestIssueUsages(t *testing.T) {
	ca := newCA(t)
	for _, tc := range []struct {
		usage          pki.Usage
		server, client bool
	}{
		{pki.UsageServer, true, false},
		{pki.UsageClient, false, true},
		{pki.UsageBoth, true, true},
	} {
		t.Run(tc.usage.String(), func(t *testing.T) {
			before := time.Now()
			cert, key, err := ca.NewCertificate(pki.IssueOptions{
				Names: pki.Names{DNSNames: []string{"Site-A.example.com"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}},
				Usage: tc.usage,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mustSPKI(t, key.Public()), cert.RawSubjectPublicKeyInfo) {
				t.Error("certificate is not for the returned key")
			}
			if cert.Subject.CommonName != "site-a.example.com" || cert.DNSNames[0] != "site-a.example.com" {
				t.Errorf("CN=%q DNS=%v, want both site-a.example.com (lower case, CN from the first DNS name)", cert.Subject.CommonName, cert.DNSNames)
			}
			now := time.Now()
			if err := verify(ca, cert, x509.ExtKeyUsageServerAuth, now); (err == nil) != tc.server {
				t.Errorf("verify as server: %v, want ok=%v", err, tc.server)
			}
			if err := verify(ca, cert, x509.ExtKeyUsageClientAuth, now); (err == nil) != tc.client {
				t.Errorf("verify as client: %v, want ok=%v", err, tc.client)
			}
			// Backdated against clock skew: a peer 3 minutes slow accepts it.
			if err := verify(ca, cert, x509.ExtKeyUsageAny, before.Add(-3*time.Minute)); err != nil {
				t.Errorf("verify 3 minutes in the past: %v", err)
			}
			if d := before.Sub(cert.NotBefore); d < pki.ClockSkew-time.Second || d > pki.ClockSkew+time.Minute {
				t.Errorf("NotBefore is %v before issuing, want about %v", d, pki.ClockSkew)
			}
			if d := cert.NotAfter.Sub(before); d < pki.DefaultValidity-time.Minute || d > pki.DefaultValidity+time.Minute {
				t.Errorf("validity %v, want %v", d, pki.DefaultValidity)
			}
			if cert.IsCA || cert.SerialNumber.BitLen() > 128 || cert.SerialNumber.Sign() <= 0 {
				t.Errorf("IsCA=%v serial bits=%d, want a leaf with a positive serial of at most 128 bits", cert.IsCA, cert.SerialNumber.BitLen())
			}
		})
	}
	if n := len(ca.Issued()); n != 3 {
		t.Errorf("index holds %d records, want 3", n)
	}
}

func mustSPKI(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestKeyTypesHandshake issues a server and a client certificate of each key
// type (RSA 3072 and 4096 are too slow to test) and runs a TLS 1.3
// handshake with client authentication between them.
func TestKeyTypesHandshake(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.KeyECDSAP256, pki.KeyECDSAP384, pki.KeyEd25519, pki.KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			ca, err := pki.NewCA(pki.InitOptions{KeyType: kt})
			if err != nil {
				t.Fatal(err)
			}
			srv := tlsCert(t, ca, pki.IssueOptions{Names: pki.Names{DNSNames: []string{"hub.example.com"}}, Usage: pki.UsageServer, KeyType: kt})
			cli := tlsCert(t, ca, pki.IssueOptions{Names: pki.Names{CommonName: "partner-b"}, Usage: pki.UsageClient, KeyType: kt})
			pool := x509.NewCertPool()
			pool.AddCert(ca.Cert)
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			s := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
			c := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{cli}, RootCAs: pool, ServerName: "hub.example.com", MinVersion: tls.VersionTLS13})
			errc := make(chan error, 1)
			go func() { errc <- s.Handshake() }()
			if err := c.Handshake(); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
			if cn := s.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "partner-b" {
				t.Errorf("server saw client CN %q", cn)
			}
		})
	}
}

func tlsCert(t *testing.T, ca *pki.CA, opts pki.IssueOptions) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(opts)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func TestIssueRefuses(t *testing.T) {
	ca := newCA(t)
	names := pki.Names{CommonName: "site-a"}
	for _, tc := range []struct {
		name string
		opts pki.IssueOptions
		want string
	}{
		{"no usage", pki.IssueOptions{Names: names}, "usage is required: server (accepts tunnels), client (dials tunnels) or both"},
		{"no identity", pki.IssueOptions{Usage: pki.UsageClient}, "no identity: give a common name, a DNS name, an IP address or a URI"},
		{"bad dns", pki.IssueOptions{Names: pki.Names{DNSNames: []string{"a b.example.com"}}, Usage: pki.UsageServer}, `DNS name "a b.example.com": character ' ' is not allowed`},
		{"trailing dot", pki.IssueOptions{Names: pki.Names{DNSNames: []string{"a.example.com."}}, Usage: pki.UsageServer}, "remove the trailing dot"},
		{"wildcard inside", pki.IssueOptions{Names: pki.Names{DNSNames: []string{"a.*.example.com"}}, Usage: pki.UsageServer}, "a wildcard must be the whole first label"},
		{"relative uri", pki.IssueOptions{Names: pki.Names{URIs: []*url.URL{{Path: "partner"}}}, Usage: pki.UsageClient}, "is not absolute"},
		{"outlives CA", pki.IssueOptions{Names: names, Usage: pki.UsageClient, Validity: 11 * 365 * 24 * time.Hour}, "the certificate would outlive the CA"},
		{"unknown key type", pki.IssueOptions{Names: names, Usage: pki.UsageClient, KeyType: "dsa"}, `unknown key type "dsa"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ca.Issue(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if n := len(ca.Issued()); n != 0 {
		t.Errorf("refused issues left %d records in the index", n)
	}
}

func TestRequestAndSignKeepPartnerKeyLocal(t *testing.T) {
	caDir := t.TempDir()
	ca, err := pki.Init(caDir, pki.InitOptions{CommonName: "Acme Partners CA"})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, keyPEM, err := pki.NewRequest(pki.RequestOptions{Names: pki.Names{
		CommonName:         "partner-b",
		OrganizationalUnit: []string{"integration"},
		URIs:               []*url.URL{mustURL(t, "spiffe://example.com/partner-b")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(csrPEM, []byte("PRIVATE KEY")) {
		t.Fatal("the request carries a private key")
	}
	partnerKey, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseRequestPEM(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient, Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, mustSPKI(t, partnerKey.Public())) {
		t.Error("signed certificate is not for the partner's key")
	}
	if cert.Subject.CommonName != "partner-b" || len(cert.Subject.OrganizationalUnit) != 1 || len(cert.URIs) != 1 {
		t.Errorf("subject %s URIs %v: want CN, OU and URI copied from the request", cert.Subject, cert.URIs)
	}
	if err := verify(ca, cert, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Errorf("verify as client: %v", err)
	}
	if err := verify(ca, cert, x509.ExtKeyUsageServerAuth, time.Now()); err == nil {
		t.Error("a client certificate verified as a server")
	}
	if got := cert.NotAfter.Sub(cert.NotBefore) - pki.ClockSkew; got.Round(time.Hour) != 30*24*time.Hour {
		t.Errorf("validity %v, want 30 days as the CA chose", got)
	}
	// No file the CA wrote holds the partner's private key.
	der, _ := x509.MarshalPKCS8PrivateKey(partnerKey)
	filepath.WalkDir(caDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, keyPEM) || bytes.Contains(data, der) {
			t.Errorf("%s holds the partner's private key", path)
		}
		return nil
	})
	if _, ok := ca.Lookup(cert.SerialNumber); !ok {
		t.Error("signed certificate is not in the index")
	}
}

// TestSignDecidesUsage: a request that asks to be a CA, for server use and
// for an email address gets none of it, and the draft says so.
func TestSignDecidesUsage(t *testing.T) {
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "partner-c", Organization: []string{"Partner C Ltd"}},
		DNSNames:        []string{"evil.example.com"},
		EmailAddresses:  []string{"ops@partner-c.example"},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	d, err := ca.Prepare(csr, pki.SignOptions{Usage: pki.UsageClient, Override: pki.Names{DNSNames: []string{"partner-c.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	summary := d.String()
	for _, want := range []string{"subject      CN=partner-c", "client (dials tunnels; cannot accept)", "dns:partner-c.example.com", "O=Partner C Ltd", "email:ops@partner-c.example", "1 requested extension(s)", "(90d)"} {
		if !strings.Contains(summary, want) {
			t.Errorf("draft summary lacks %q:\n%s", want, summary)
		}
	}
	if strings.Contains(summary, "evil.example.com") {
		t.Errorf("draft still shows the overridden DNS name:\n%s", summary)
	}
	cert, err := d.Sign()
	if err != nil {
		t.Fatal(err)
	}
	if cert.IsCA || len(cert.Subject.Organization) != 0 || len(cert.EmailAddresses) != 0 || cert.DNSNames[0] != "partner-c.example.com" {
		t.Errorf("signed IsCA=%v O=%v email=%v DNS=%v: the CA copied what it should not", cert.IsCA, cert.Subject.Organization, cert.EmailAddresses, cert.DNSNames)
	}
	if cert.SerialNumber.Cmp(d.Template.SerialNumber) != 0 {
		t.Error("signed serial differs from the one shown")
	}
	if _, err := d.Sign(); err == nil {
		t.Error("a draft was signed twice")
	}
}

func TestSignRefusesBadRequests(t *testing.T) {
	ca := newCA(t)
	csrPEM, _, err := pki.NewRequest(pki.RequestOptions{Names: pki.Names{CommonName: "partner-b"}})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	tampered := bytes.Replace(block.Bytes, []byte("partner-b"), []byte("partner-x"), 1)
	bad, err := x509.ParseCertificateRequest(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Sign(bad, pki.SignOptions{Usage: pki.UsageClient}); err == nil || !strings.Contains(err.Error(), "request signature does not verify") {
		t.Errorf("tampered request: err = %v", err)
	}
	if _, err := pki.ParseRequestPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})); err == nil {
		t.Error("ParseRequestPEM accepted a tampered request")
	}

	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "old"}}, weak)
	csr, _ := x509.ParseCertificateRequest(der)
	if _, err := ca.Sign(csr, pki.SignOptions{Usage: pki.UsageClient}); err == nil || !strings.Contains(err.Error(), "RSA 1024 is too weak") {
		t.Errorf("RSA 1024 request: err = %v", err)
	}

	good, _ := pki.ParseRequestPEM(csrPEM)
	if _, err := ca.Sign(good, pki.SignOptions{}); err == nil || !strings.Contains(err.Error(), "usage is required") {
		t.Errorf("no usage: err = %v", err)
	}
	if n := len(ca.Issued()); n != 0 {
		t.Errorf("refused requests left %d records", n)
	}
}

func TestRevokeAndCRL(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) *x509.Certificate {
		c, _, err := ca.NewCertificate(pki.IssueOptions{Names: pki.Names{CommonName: cn}, Usage: pki.UsageClient})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	gone, kept, byFile := issue("gone"), issue("kept"), issue("by-file")
	if err := ca.Revoke(gone.SerialNumber, pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if err := ca.RevokeCertificate(byFile, pki.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke(gone.SerialNumber, pki.ReasonKeyCompromise); !errors.Is(err, pki.ErrAlreadyRevoked) {
		t.Errorf("revoke twice: err = %v, want ErrAlreadyRevoked", err)
	}
	if err := ca.Revoke(big.NewInt(12345), 0); !errors.Is(err, pki.ErrUnknownSerial) {
		t.Errorf("unknown serial: err = %v, want ErrUnknownSerial", err)
	}
	foreign, _, _ := newCA(t).NewCertificate(pki.IssueOptions{Names: pki.Names{CommonName: "x"}, Usage: pki.UsageClient})
	if err := ca.RevokeCertificate(foreign, 0); !errors.Is(err, pki.ErrUnknownSerial) {
		t.Errorf("foreign certificate: err = %v, want ErrUnknownSerial", err)
	}

	crlPEM, err := ca.CRL(0)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, pki.CRLFile))
	if !bytes.Equal(crlPEM, onDisk) {
		t.Error("CRL returned differs from ca.crl")
	}
	crl, err := pki.ParseCRLPEM(crlPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	reasons := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		reasons[pki.FormatSerial(e.SerialNumber)] = e.ReasonCode
	}
	want := map[string]int{pki.FormatSerial(gone.SerialNumber): pki.ReasonKeyCompromise, pki.FormatSerial(byFile.SerialNumber): pki.ReasonSuperseded}
	if len(reasons) != 2 || reasons[pki.FormatSerial(gone.SerialNumber)] != want[pki.FormatSerial(gone.SerialNumber)] || reasons[pki.FormatSerial(byFile.SerialNumber)] != pki.ReasonSuperseded {
		t.Errorf("CRL entries %v, want %v", reasons, want)
	}
	if _, ok := reasons[pki.FormatSerial(kept.SerialNumber)]; ok {
		t.Error("CRL lists a certificate that was not revoked")
	}
	if d := time.Until(crl.NextUpdate); d < pki.DefaultCRLValidity-time.Minute || d > pki.DefaultCRLValidity {
		t.Errorf("nextUpdate in %v, want %v", d, pki.DefaultCRLValidity)
	}

	reopened, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(reopened.Revoked()); n != 2 {
		t.Errorf("reopened CA has %d revocations, want 2", n)
	}
}

func TestCRLResignAdvances(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca.Time = func() time.Time { return now }
	first, err := ca.CRL(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reopened, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	reopened.Time = func() time.Time { return now.Add(2 * time.Hour) }
	second, err := reopened.CRL(0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := pki.ParseCRLPEM(first)
	b, _ := pki.ParseCRLPEM(second)
	if a.Number.Int64() != 2 || b.Number.Int64() != 3 { // Init signed number 1
		t.Errorf("CRL numbers %v then %v, want 2 then 3", a.Number, b.Number)
	}
	if !b.ThisUpdate.After(a.ThisUpdate) || !b.NextUpdate.After(a.NextUpdate) {
		t.Errorf("re-signed CRL %v–%v does not advance on %v–%v", b.ThisUpdate, b.NextUpdate, a.ThisUpdate, a.NextUpdate)
	}
	if got := b.NextUpdate.Sub(now.Add(2 * time.Hour)); got <= pki.DefaultCRLValidity-time.Second || got > pki.DefaultCRLValidity { // CRL times have whole seconds
		t.Errorf("nextUpdate %v after signing, want %v", got, pki.DefaultCRLValidity)
	}
	if _, err := ca.CRL(-time.Hour); err == nil {
		t.Error("a negative CRL validity was accepted")
	}
}

func TestDescribeShowsIdentities(t *testing.T) {
	ca := newCA(t)
	cert, key, err := ca.NewCertificate(pki.IssueOptions{
		Names: pki.Names{
			CommonName:         "Legacy Gateway",
			OrganizationalUnit: []string{"ops"},
			DNSNames:           []string{"gw.example.com"},
			IPAddresses:        []net.IP{net.ParseIP("192.0.2.7")},
			URIs:               []*url.URL{mustURL(t, "spiffe://example.com/gw")},
		},
		Usage: pki.UsageBoth,
	})
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(cert.Raw)
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	wantIDs := []string{
		"cn:Legacy Gateway", "dns:gw.example.com", "ip:192.0.2.7", "uri:spiffe://example.com/gw", "ou:ops",
		"sha256:" + hex.EncodeToString(fp[:]), "spki:" + hex.EncodeToString(spki[:]),
	}
	if got := identity.Identities(cert); strings.Join(got, " ") != strings.Join(wantIDs, " ") {
		t.Errorf("Identities = %q\nwant %q", got, wantIDs)
	}
	out := pki.Describe(pki.Object{Certificate: cert}, pki.DescribeOptions{CA: ca.Cert})
	for _, want := range append(wantIDs, "server and client", "verified by CN=Test CA", "expires in 90 days", "ECDSA P-256") {
		if !strings.Contains(out, "  "+want) && !strings.Contains(out, want) {
			t.Errorf("Describe lacks %q:\n%s", want, out)
		}
	}
	expired := pki.Describe(pki.Object{Certificate: cert}, pki.DescribeOptions{Now: cert.NotAfter.Add(49 * time.Hour)})
	if !strings.Contains(expired, "EXPIRED 2 days ago") {
		t.Errorf("Describe after expiry:\n%s", expired)
	}
	keyOut := pki.Describe(pki.Object{PublicKey: key.Public()}, pki.DescribeOptions{})
	if !strings.Contains(keyOut, "spki:"+hex.EncodeToString(spki[:])) {
		t.Errorf("private key view lacks the spki of its certificate:\n%s", keyOut)
	}
}

// TestDescribeQuotesControlCharacters: a request is written by someone else;
// a terminal escape in it must not reach the operator's terminal raw.
func TestDescribeQuotesControlCharacters(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "partner\x1b[2Jb", Organization: []string{"x\u202eevil"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	out := pki.Describe(pki.Object{Request: csr}, pki.DescribeOptions{})
	if strings.ContainsAny(out, "\x1b\u202e") {
		t.Errorf("control characters reached the output:\n%q", out)
	}
	if !strings.Contains(out, `"    cn:partner\x1b[2Jb"`) {
		t.Errorf("the CN is not shown quoted:\n%s", out)
	}
	if _, err := newCA(t).Prepare(csr, pki.SignOptions{Usage: pki.UsageClient}); err == nil || !strings.Contains(err.Error(), "contains a control character") {
		t.Errorf("Prepare: err = %v, want a refusal of the control character", err)
	}
}

func TestParseObjects(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "a"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, _, _ := pki.NewRequest(pki.RequestOptions{Names: pki.Names{CommonName: "b"}})
	crlPEM, _ := ca.CRL(0)
	cert, _ := pki.ParseCertPEM(certPEM)

	bundle := bytes.Join([][]byte{[]byte("Bag Attributes: text openssl writes\n"), certPEM, csrPEM, crlPEM, keyPEM}, nil)
	objs, err := pki.ParseObjects(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 4 || objs[0].Certificate == nil || objs[1].Request == nil || objs[2].CRL == nil || objs[3].PublicKey == nil {
		t.Errorf("bundle parsed as %+v, want certificate, request, CRL, key", objs)
	}
	for _, der := range [][]byte{cert.Raw, objs[1].Request.Raw, objs[2].CRL.Raw} {
		if o, err := pki.ParseObjects(der); err != nil || len(o) != 1 {
			t.Errorf("DER: %v, %d objects", err, len(o))
		}
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", []byte("\n"), "the file is empty"},
		{"garbage", []byte("hello"), "not a certificate, certificate request or CRL, in PEM or DER"},
		{"truncated", certPEM[:len(certPEM)/2], "a PEM block could not be read"},
		{"other type", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), "unsupported PEM type"},
		{"broken cert", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), "PEM block 1 (CERTIFICATE)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pki.ParseObjects(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"3f9a", 0x3f9a, true},
		{"3F:9A", 0x3f9a, true},
		{"0x3f9a", 0x3f9a, true},
		{"", 0, false},
		{"-5", 0, false},
		{"0", 0, false},
		{"xyz", 0, false},
	} {
		n, err := pki.ParseSerial(tc.in)
		if (err == nil) != tc.ok || (tc.ok && n.Int64() != tc.want) {
			t.Errorf("ParseSerial(%q) = %v, %v", tc.in, n, err)
		}
	}
}

func TestParseReason(t *testing.T) {
	for in, want := range map[string]int{"key-compromise": 1, "keyCompromise": 1, "SUPERSEDED": 4, "9": 9, "unspecified": 0} {
		if got, err := pki.ParseReason(in); err != nil || got != want {
			t.Errorf("ParseReason(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := pki.ParseReason("certificate-hold"); err == nil {
		t.Error("certificate-hold accepted: holds cannot be lifted in this CA")
	}
}

// FuzzParseObjects feeds `postern pki show`'s loader arbitrary files; it and
// Describe must never panic.
func FuzzParseObjects(f *testing.F) {
	ca, err := pki.NewCA(pki.InitOptions{})
	if err != nil {
		f.Fatal(err)
	}
	certPEM, keyPEM, _ := ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "a", DNSNames: []string{"a.example"}}, Usage: pki.UsageBoth})
	csrPEM, _, _ := pki.NewRequest(pki.RequestOptions{Names: pki.Names{CommonName: "b"}})
	ca.Revoke(mustParse(certPEM).SerialNumber, 1)
	crlPEM, _ := ca.CRL(0)
	f.Add(certPEM)
	f.Add(keyPEM)
	f.Add(csrPEM)
	f.Add(crlPEM)
	f.Add(mustParse(certPEM).Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := pki.ParseObjects(data)
		if err != nil {
			return
		}
		for _, o := range objs {
			pki.Describe(o, pki.DescribeOptions{CA: ca.Cert})
		}
	})
}

func mustParse(certPEM []byte) *x509.Certificate {
	c, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		panic(err)
	}
	return c
}
