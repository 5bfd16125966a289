package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/fuzzedit"
	"golang.org/x/crypto/ocsp"
)

// The OCSP fuzz world is fixed: keys derived from labels and a fixed clock,
// so the coordinator's seeds and the workers' checks agree (each fuzz
// process builds it anew) and a saved crasher stays meaningful.
var ocspFuzzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const ocspFuzzURL = "http://ocsp.fuzz.test/"

type ocspWorld struct {
	ca, otherCA     *x509.Certificate
	caKey, otherKey *ecdsa.PrivateKey
	leaf            *x509.Certificate // the certificate whose status is asked
	sibling         *x509.Certificate // another leaf of the same CA, no OCSP signing
	siblingKey      *ecdsa.PrivateKey
	delegate        *x509.Certificate // the CA's delegated responder (id-kp-OCSPSigning)
	delegateKey     *ecdsa.PrivateKey
	expired         *x509.Certificate // a delegated responder no longer valid
	expiredKey      *ecdsa.PrivateKey
}

var (
	ocspWorldOnce sync.Once
	ocspWorldVal  *ocspWorld
)

func fixedKey(t testing.TB, label string) *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte("postern ocsp fuzz " + label))
	d[0] &= 0x7f // below the P-256 order
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fuzzCert(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func getOCSPWorld(t testing.TB) *ocspWorld {
	ocspWorldOnce.Do(func() {
		w := &ocspWorld{caKey: fixedKey(t, "ca"), otherKey: fixedKey(t, "other ca"),
			siblingKey: fixedKey(t, "sibling"), delegateKey: fixedKey(t, "delegate"), expiredKey: fixedKey(t, "expired")}
		nb, na := ocspFuzzNow.Add(-24*time.Hour), ocspFuzzNow.Add(365*24*time.Hour)
		ca := func(cn string, key *ecdsa.PrivateKey) *x509.Certificate {
			return fuzzCert(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
				NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true,
				KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, nil, key.Public(), key)
		}
		w.ca, w.otherCA = ca("fuzz ca", w.caKey), ca("other ca", w.otherKey)
		leaf := func(serial int64, cn string, key *ecdsa.PrivateKey, eku x509.ExtKeyUsage, nb, na time.Time) *x509.Certificate {
			return fuzzCert(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
				NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{eku}, OCSPServer: []string{ocspFuzzURL}}, w.ca, key.Public(), w.caKey)
		}
		w.leaf = leaf(0x1001, "site-a", fixedKey(t, "leaf"), x509.ExtKeyUsageClientAuth, nb, na)
		w.sibling = leaf(0x1002, "site-b", w.siblingKey, x509.ExtKeyUsageClientAuth, nb, na)
		w.delegate = leaf(0x1003, "ocsp responder", w.delegateKey, x509.ExtKeyUsageOCSPSigning, nb, na)
		w.expired = leaf(0x1004, "old ocsp responder", w.expiredKey, x509.ExtKeyUsageOCSPSigning,
			ocspFuzzNow.Add(-48*time.Hour), ocspFuzzNow.Add(-24*time.Hour))
		ocspWorldVal = w
	})
	if ocspWorldVal == nil {
		t.Fatal("OCSP fuzz world not built")
	}
	return ocspWorldVal
}

// respond signs an answer about serial with key, embedding responder when
// not nil.
func (w *ocspWorld) respond(t testing.TB, serial int64, status int, responder *x509.Certificate, key crypto.Signer, thisUpdate, nextUpdate time.Time) []byte {
	tmpl := ocsp.Response{Status: status, SerialNumber: big.NewInt(serial),
		ThisUpdate: thisUpdate, NextUpdate: nextUpdate, Certificate: responder}
	if status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = ocspFuzzNow.Add(-time.Hour), ocsp.KeyCompromise
	}
	issuer := w.ca
	if responder == nil {
		responder = w.ca
	}
	der, err := ocsp.CreateResponse(issuer, responder, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// bodyTransport answers every request with body, as a responder would.
type bodyTransport []byte

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/ocsp-response"}}, Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

// ocspCases are the answers the fuzzer starts from, each with how it must
// be judged ("" = accepted). They are stored in testdata/ocsp/NAME.der (so
// every fuzz process mutates the same bytes: ECDSA signatures differ each
// time they are made); POSTERN_WRITE_OCSP_SEEDS=1 go test -run
// TestOCSPResponders ./trust writes them anew.
var ocspCases = []struct {
	name   string
	make   func(t testing.TB, w *ocspWorld) []byte
	status int
	err    string
}{
	{"good", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, nil, w.caKey, hourAgo, inHour)
	}, ocsp.Good, ""},
	{"revoked", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Revoked, nil, w.caKey, hourAgo, inHour)
	}, ocsp.Revoked, ""},
	{"unknown", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Unknown, nil, w.caKey, hourAgo, time.Time{})
	}, ocsp.Unknown, ""},
	{"delegate", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, w.delegate, w.delegateKey, hourAgo, inHour)
	}, ocsp.Good, ""},
	// Signed by a certificate of the same CA that may not answer for it:
	// the OCSP parser accepts it because the CA issued it.
	{"sibling", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, w.sibling, w.siblingKey, hourAgo, inHour)
	}, 0, `bad answer: signed by certificate CN="site-b" (serial 1002), which CN="fuzz ca" did not make an OCSP responder (no id-kp-OCSPSigning)`},
	{"expired-delegate", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, w.expired, w.expiredKey, hourAgo, inHour)
	}, 0, `bad answer: signed by responder certificate CN="old ocsp responder" (serial 1004), valid 2026-05-30T12:00:00Z to 2026-05-31T12:00:00Z only (local clock 2026-06-01T12:00:00Z)`},
	{"other-ca", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, nil, w.otherKey, hourAgo, inHour)
	}, 0, "bad answer: bad OCSP signature"},
	{"other-serial", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1002, ocsp.Good, nil, w.caKey, hourAgo, inHour)
	}, 0, "bad answer: no response matching the supplied certificate"},
	{"stale", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, nil, w.caKey, ocspFuzzNow.Add(-48*time.Hour), ocspFuzzNow.Add(-24*time.Hour))
	}, 0, "stale answer: its next update was 2026-05-31T12:00:00Z"},
	{"future", func(t testing.TB, w *ocspWorld) []byte {
		return w.respond(t, 0x1001, ocsp.Good, nil, w.caKey, ocspFuzzNow.Add(24*time.Hour), ocspFuzzNow.Add(48*time.Hour))
	}, 0, "answer dated 2026-06-02T12:00:00Z, in the future"},
}

var hourAgo, inHour = ocspFuzzNow.Add(-time.Hour), ocspFuzzNow.Add(time.Hour)

func ocspSeedPath(name string) string { return filepath.Join("testdata", "ocsp", name+".der") }

// FuzzOCSPResponse feeds a responder's answer to the code that reads it
// (askOCSP, then checkOCSP as a handshake in hard mode uses it). An
// accepted answer must be about the certificate asked (its serial), signed
// by its issuer's key or by a responder the issuer delegated to (issued by
// it, id-kp-OCSPSigning, valid now), and current; the handshake's verdict
// must follow the status; every failure is an *OCSPError that names the
// certificate and the responder.
//
// The input is a stored answer (base) and a few edits to it, or, for a
// base past the stored ones, the answer's bytes themselves: inputs stay a
// few dozen bytes, which Go's minimiser (quadratic in the input's length)
// gets through quickly, while every edit lands in a signed answer.
func FuzzOCSPResponse(f *testing.F) {
	w := getOCSPWorld(f)
	bases := make([][]byte, len(ocspCases))
	for i, c := range ocspCases {
		b, err := os.ReadFile(ocspSeedPath(c.name))
		if err != nil {
			f.Fatal(err)
		}
		bases[i] = b
		f.Add(uint8(i), []byte(nil))
	}
	f.Add(uint8(0), []byte{0, 0, 10, 0xff})   // one byte changed
	f.Add(uint8(3), []byte{2, 0x01, 0x00, 0}) // truncated
	f.Add(uint8(255), ocsp.MalformedRequestErrorResponse)
	f.Add(uint8(255), []byte{0x30, 0x03, 0x0a, 0x01, 0x00})

	f.Fuzz(func(t *testing.T, base uint8, patch []byte) {
		if len(patch) > 128 {
			return // long inputs only slow the minimiser; edits reach every byte of a stored answer
		}
		body := patch
		if int(base) < len(bases) {
			body = fuzzedit.Apply(bases[base], patch)
		}
		checkOCSPBody(t, w, body)
	})
}

func checkOCSPBody(t *testing.T, w *ocspWorld, body []byte) {
	t.Helper()
	now := ocspFuzzNow
	client := &http.Client{Transport: bodyTransport(body)}
	req, err := ocsp.CreateRequest(w.leaf, w.ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, askErr := askOCSP(client, ocspFuzzURL, req, w.leaf, w.ca, now)
	if askErr == nil {
		checkAccepted(t, w, resp, now)
	}

	c := &Credentials{}
	c.ocsp.client = client
	err = c.checkOCSP(w.leaf, w.ca, SideServer, OCSPHard, now, false)
	switch {
	case askErr != nil:
		var oe *OCSPError
		if !errors.As(err, &oe) || oe.Err == nil || oe.Err.Error() != askErr.Error() {
			t.Fatalf("answer refused (%v), checkOCSP returned %v (%T); want an *OCSPError with that cause", askErr, err, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, `CN="site-a"`) || !strings.Contains(msg, "1001") || !strings.Contains(msg, ocspFuzzURL) {
			t.Fatalf("error %q does not name the certificate and the responder", msg)
		}
	case resp.Status == ocsp.Good:
		if err != nil {
			t.Fatalf("good answer, checkOCSP returned %v", err)
		}
	case resp.Status == ocsp.Revoked:
		var re *RevokedError
		if !errors.As(err, &re) || re.Cert != w.leaf || !strings.Contains(re.Source, ocspFuzzURL) {
			t.Fatalf("revoked answer, checkOCSP returned %v (%T)", err, err)
		}
	default:
		var oe *OCSPError
		if !errors.As(err, &oe) {
			t.Fatalf("status %d, checkOCSP returned %v (%T); want *OCSPError", resp.Status, err, err)
		}
	}
}

// checkAccepted verifies an accepted answer independently of the OCSP
// parser: the serial, the signer and the dates.
func checkAccepted(t *testing.T, w *ocspWorld, resp *ocsp.Response, now time.Time) {
	t.Helper()
	if resp == nil {
		t.Fatal("accepted a nil answer")
	}
	if resp.SerialNumber == nil || resp.SerialNumber.Cmp(w.leaf.SerialNumber) != 0 {
		t.Fatalf("accepted an answer (status %d) about serial %v, asked %v", resp.Status, resp.SerialNumber, w.leaf.SerialNumber)
	}
	signer := w.ca
	if rc := resp.Certificate; rc != nil && !bytes.Equal(rc.RawSubjectPublicKeyInfo, w.ca.RawSubjectPublicKeyInfo) {
		if err := rc.CheckSignatureFrom(w.ca); err != nil {
			// CheckSignatureFrom also wants the parent to be a CA; the
			// embedded certificate must at least be signed by its key.
			t.Fatalf("accepted an answer from %q, not issued by the CA: %v", rc.Subject, err)
		}
		delegated := false
		for _, u := range rc.ExtKeyUsage {
			delegated = delegated || u == x509.ExtKeyUsageOCSPSigning
		}
		if !delegated {
			t.Fatalf("accepted an answer signed by %q, which has no id-kp-OCSPSigning", rc.Subject)
		}
		if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
			t.Fatalf("accepted an answer signed by %q, valid %s to %s only", rc.Subject, rc.NotBefore, rc.NotAfter)
		}
		signer = rc
	}
	if err := signer.CheckSignature(resp.SignatureAlgorithm, resp.TBSResponseData, resp.Signature); err != nil {
		t.Fatalf("accepted an answer whose signature does not verify with %q: %v", signer.Subject, err)
	}
	pub, ok := signer.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(w.caKey.Public()) && !pub.Equal(w.delegateKey.Public()) {
		t.Fatalf("accepted an answer signed by a key that is neither the CA's nor its responder's")
	}
	if resp.ThisUpdate.After(now.Add(ocspClockSkew)) {
		t.Fatalf("accepted an answer dated %s", resp.ThisUpdate)
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate.Add(ocspClockSkew)) {
		t.Fatalf("accepted a stale answer (next update %s)", resp.NextUpdate)
	}
	switch resp.Status {
	case ocsp.Good, ocsp.Revoked, ocsp.Unknown:
	default:
		t.Fatalf("accepted status %d", resp.Status)
	}
}

// TestOCSPResponders: each case is judged as it must be, made afresh and
// as stored for the fuzzer, so the fuzzer starts from both sides of every
// check. Among them the regression FuzzOCSPResponse found ("sibling"): an
// answer signed by another certificate of the same CA (a peer's own, say),
// which the OCSP parser accepts because the CA issued it, though the CA
// never made it a responder.
func TestOCSPResponders(t *testing.T) {
	w := getOCSPWorld(t)
	write := os.Getenv("POSTERN_WRITE_OCSP_SEEDS") == "1"
	for _, tc := range ocspCases {
		t.Run(tc.name, func(t *testing.T) {
			fresh := tc.make(t, w)
			if write {
				if err := os.MkdirAll(filepath.Dir(ocspSeedPath(tc.name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(ocspSeedPath(tc.name), fresh, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			stored, err := os.ReadFile(ocspSeedPath(tc.name))
			if err != nil {
				t.Fatal(err)
			}
			for _, body := range [][]byte{fresh, stored} {
				resp, err := askOCSP(&http.Client{Transport: bodyTransport(body)}, ocspFuzzURL, nil, w.leaf, w.ca, ocspFuzzNow)
				if tc.err == "" {
					if err != nil || resp.Status != tc.status {
						t.Fatalf("askOCSP = %v, %v; want status %d", resp, err, tc.status)
					}
					continue
				}
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("askOCSP error %v, want %q", err, tc.err)
				}
			}
		})
	}
}
