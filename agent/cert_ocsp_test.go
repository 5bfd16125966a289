package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// ocspResponder is a real OCSP responder on loopback, signing with the CA's
// key. Each serial's status can be changed while it runs.
type ocspResponder struct {
	ca         *testca.CA
	url        string
	nextUpdate time.Duration // how long answers are valid
	hits       atomic.Int64

	mu     sync.Mutex
	status map[string]int // serial (hex) → ocsp.Good, ocsp.Revoked; missing = ocsp.Unknown
}

func newOCSPResponder(t *testing.T, ca *testca.CA, nextUpdate time.Duration) *ocspResponder {
	t.Helper()
	r := &ocspResponder{ca: ca, nextUpdate: nextUpdate, status: map[string]int{}}
	ln := testnet.Listen(t)
	srv := &http.Server{Handler: r}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/ocsp"
	return r
}

func (r *ocspResponder) set(serial *big.Int, status int) {
	r.mu.Lock()
	r.status[serial.Text(16)] = status
	r.mu.Unlock()
}

func (r *ocspResponder) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	r.hits.Add(1)
	body, _ := io.ReadAll(hr.Body)
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		w.Write(ocsp.MalformedRequestErrorResponse)
		return
	}
	r.mu.Lock()
	status, ok := r.status[req.SerialNumber.Text(16)]
	r.mu.Unlock()
	if !ok {
		status = ocsp.Unknown
	}
	now := time.Now()
	tmpl := ocsp.Response{
		Status: status, SerialNumber: req.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(r.nextUpdate),
	}
	if status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = now.Add(-time.Minute), ocsp.KeyCompromise
	}
	der, err := ocsp.CreateResponse(r.ca.Cert, r.ca.Cert, tmpl, r.ca.Key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(der)
}

// issueWithOCSP issues a client certificate of ca that names responder as
// its OCSP server, and writes it as NAME.crt and NAME.key in dir.
func issueWithOCSP(t *testing.T, ca *testca.CA, dir, name, cn, responder string) (testca.Files, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{cn + ".test"},
		OCSPServer:  []string{responder},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, crypto.Signer(key).Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := testca.Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, name+"-ca.crt")}
	testca.WriteFile(t, f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	testca.WriteFile(t, f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	testca.WriteFile(t, f.CA, ca.PEM)
	return f, cert
}

// closedURL is an OCSP URL where connections are refused.
func closedURL(t *testing.T) string {
	return "http://" + testnet.RefusedAddr(t) + "/ocsp"
}

// TestOCSP: the hub asks the site certificate's OCSP responder on every
// handshake (answers cached until their nextUpdate): good lets the tunnel
// up, revoked refuses it, and a responder that does not answer is waved
// through in soft mode and refused in hard mode.
func TestOCSP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      string
		status    int  // what the responder says about the site
		down      bool // the responder does not answer
		connected bool
		hubLog    []string
	}{
		{name: "good", mode: "soft", status: ocsp.Good, connected: true},
		{name: "revoked", mode: "soft", status: ocsp.Revoked,
			hubLog: []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" was revoked on`, "reason: key-compromise", "according to OCSP responder http://127.0.0.1:"}},
		{name: "unknown in hard mode", mode: "hard", status: ocsp.Unknown,
			hubLog: []string{`msg="tunnel refused"`, `cannot check client certificate CN=\"site-a\" with its OCSP responder`, "status unknown", `ocsp = \"soft\"`}},
		{name: "unreachable in soft mode", mode: "soft", down: true, connected: true,
			hubLog: []string{"peer certificate accepted without an OCSP answer", "side=client", `peer="CN=\"site-a\"`, "url=http://127.0.0.1:", "connection refused", `accepted because ocsp = \"soft\"`}},
		{name: "unreachable in hard mode", mode: "hard", down: true,
			hubLog: []string{`msg="tunnel refused"`, `cannot check client certificate CN=\"site-a\" with its OCSP responder http://127.0.0.1:`, "connection refused", `ocsp = \"hard\" refuses without an answer`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := newPKI(t, dir)
			resp := newOCSPResponder(t, p.ca, time.Hour)
			url := resp.url
			if tc.down {
				url = closedURL(t)
			}
			var cert *x509.Certificate
			p.site, cert = issueWithOCSP(t, p.ca, dir, "site", "site-a", url)
			resp.set(cert.SerialNumber, tc.status)
			hub := start(t, dir, "hub", withServerKeys(hubTOML(p, ""), fmt.Sprintf("ocsp = %q", tc.mode)))
			addr := hub.ServerAddrs()[0].String()
			site := start(t, dir, "site", siteTOML(p, addr))
			if tc.connected {
				site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
			} else {
				site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", "hub refused this agent's certificate: ", `CN=\"site-a\"`)
			}
			if len(tc.hubLog) > 0 {
				hub.log.WaitFor(t, 10*time.Second, tc.hubLog...)
			}
			if tc.name == "good" {
				// A second agent with the same certificate is answered from
				// the cache.
				again := start(t, t.TempDir(), "site2", siteTOML(p, addr))
				again.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
				if n := resp.hits.Load(); n != 1 {
					t.Errorf("responder asked %d times for two handshakes, want once (cached until nextUpdate)", n)
				}
			}
		})
	}
}

// TestOCSPRevokesLiveTunnel: a connected site whose OCSP status turns to
// revoked loses its tunnel once the cached good answer expires.
func TestOCSPRevokesLiveTunnel(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	resp := newOCSPResponder(t, p.ca, time.Second)
	var cert *x509.Certificate
	p.site, cert = issueWithOCSP(t, p.ca, dir, "site", "site-a", resp.url)
	resp.set(cert.SerialNumber, ocsp.Good)
	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, ""), "ocsp = \"hard\"\nreload_interval = \"100ms\""))
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String()))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	resp.set(cert.SerialNumber, ocsp.Revoked)
	hub.log.WaitFor(t, 10*time.Second, "closing tunnel: the peer no longer passes verification", "peer_addr=",
		`client certificate CN=\"site-a\" was revoked`, "according to OCSP responder "+resp.url)
	site.log.WaitFor(t, 10*time.Second, "tunnel not connected; retrying", "tunnel=hub", `hub refused this agent's certificate: client certificate CN=\"site-a\" was revoked`, "according to OCSP responder "+resp.url)
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("site connected %d times, want once", n)
	}
}
