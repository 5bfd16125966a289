package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

// pkiRun runs `postern pki ARGS...` with stdin and returns the exit status
// and what it printed.
func pkiRun(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = pkiMain(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// pkiMust runs a pki action that must succeed.
func pkiMust(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := pkiRun(t, "", args...)
	if code != 0 {
		t.Fatalf("postern pki %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestPKIRoundTrip: the CA operator creates a CA, the partner makes a key
// and a request on its own machine, the CA signs the request, later revokes
// the certificate, and `show` tells both sides what they hold.
func TestPKIRoundTrip(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "pki")
	partner := filepath.Join(t.TempDir(), "partner-b")

	var out, errOut bytes.Buffer
	if code := cmdPKI([]string{"init", "--dir", caDir, "--cn", "Acme Partners CA"}, &out, &errOut); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `created CA "Acme Partners CA"`) {
		t.Errorf("init said:\n%s", out.String())
	}

	out.Reset()
	if code := cmdPKI([]string{"request", "--cn", "partner-b", "--ou", "integration", "--uri", "spiffe://example.com/partner-b", "--out", partner}, &out, &errOut); code != 0 {
		t.Fatalf("request: exit %d: %s", code, errOut.String())
	}
	keyBefore, err := os.ReadFile(partner + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(partner + ".key"); fi.Mode().Perm() != 0o600 {
			t.Errorf("partner key mode %o, want 600", fi.Mode().Perm())
		}
	}

	// Flags after the file name work too.
	out.Reset()
	if code := cmdPKI([]string{"sign", "--dir", caDir, partner + ".csr", "--usage", "client", "--yes"}, &out, &errOut); code != 0 {
		t.Fatalf("sign: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"certificate to sign", "CN=partner-b,OU=integration", "client (dials tunnels; cannot accept)", "uri:spiffe://example.com/partner-b", "wrote " + partner + ".crt"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sign output lacks %q:\n%s", want, out.String())
		}
	}
	// The partner's key pairs with the certificate and never changed.
	if _, err := tls.LoadX509KeyPair(partner+".crt", partner+".key"); err != nil {
		t.Errorf("partner key and certificate do not pair: %v", err)
	}
	if keyAfter, _ := os.ReadFile(partner + ".key"); !bytes.Equal(keyBefore, keyAfter) {
		t.Error("signing changed the partner's key file")
	}
	cert := pkiReadCertFile(t, partner+".crt")
	serial := pki.FormatSerial(cert.SerialNumber)

	out.Reset()
	if code := cmdPKI([]string{"revoke", "--dir", caDir, "--reason", "key-compromise", partner + ".crt"}, &out, &errOut); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "revoked serial "+serial) || !strings.Contains(out.String(), "CRL number 2, 1 revoked") {
		t.Errorf("revoke said:\n%s", out.String())
	}

	out.Reset()
	code := cmdPKI([]string{"show", "--ca", filepath.Join(caDir, pki.CertFile), filepath.Join(caDir, pki.CRLFile), partner + ".crt", partner + ".csr", partner + ".key"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut.String())
	}
	shown := out.String()
	for _, want := range []string{
		"certificate revocation list", "signature    verified by CN=Acme Partners CA", "serial " + serial, "key-compromise",
		"chain        verified by CN=Acme Partners CA",
		"cn:partner-b", "ou:integration", "uri:spiffe://example.com/partner-b",
		"sha256:" + identity.Fingerprint(cert), "certificate request", "private key (not shown)",
	} {
		if !strings.Contains(shown, want) {
			t.Errorf("show output lacks %q:\n%s", want, shown)
		}
	}
	spki, _ := identity.KeyHash(cert.PublicKey)
	if n := strings.Count(shown, "spki:"+spki); n != 3 {
		t.Errorf("spki:%s appears %d times, want 3 (certificate, request, key):\n%s", spki, n, shown)
	}
	if strings.Contains(shown, "BEGIN") {
		t.Errorf("show printed PEM (a key?):\n%s", shown)
	}
}

func pkiReadCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestPKIIssue(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir)
	out := pkiMust(t, "issue", "--dir", caDir, "--usage", "both", "--dns", "hub.example.com,hub2.example.com", "--ip", "192.0.2.1", "--validity", "30d", "--out", filepath.Join(dir, "certs", "hub"))
	if !strings.Contains(out, "issued both certificate CN=hub.example.com") || !strings.Contains(out, "dns:hub2.example.com") {
		t.Errorf("issue said:\n%s", out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs", "hub.crt"), filepath.Join(dir, "certs", "hub.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert := pair.Leaf
	ca := pkiReadCertFile(t, filepath.Join(caDir, pki.CertFile))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "hub2.example.com", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for %v: %v", usage, err)
		}
	}
	if got := cert.NotAfter.Sub(cert.NotBefore) - pki.ClockSkew; got.Round(time.Hour) != 30*24*time.Hour {
		t.Errorf("validity %v, want 30 days", got)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "certs", "hub.key"))
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Error("key is not PKCS#8 PEM")
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(filepath.Join(dir, "certs", "hub.key")); fi.Mode().Perm() != 0o600 {
			t.Errorf("key mode %o, want 600", fi.Mode().Perm())
		}
	}
}

// TestPKIIssueDefaultOut names the files after the CN when --out is absent.
func TestPKIIssueDefaultOut(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	pkiMust(t, "init")
	pkiMust(t, "issue", "--usage", "server", "--dns", "*.example.com")
	for _, name := range []string{"example.com.crt", "example.com.key", filepath.Join("pki", pki.CertFile)} {
		if _, err := os.Stat(name); err != nil {
			t.Errorf("missing %s: %v", name, err)
		}
	}
}

func TestPKISignAsksFirst(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "request", "--dns", "partner-c.example.com", "--out", filepath.Join(dir, "c"))
	crt := filepath.Join(dir, "c.crt")

	for _, tc := range []struct {
		stdin   string
		code    int
		stderr  string
		written bool
	}{
		{"", 1, "postern pki sign: not signed: no answer on standard input; check what is shown above and run again with --yes\n", false},
		{"n\n", 1, "postern pki sign: not signed (answer \"n\")\n", false},
		{"yes\n", 0, "", true},
	} {
		code, out, errOut := pkiRun(t, tc.stdin, "sign", "--dir", caDir, "--usage", "server", filepath.Join(dir, "c.csr"))
		if code != tc.code || errOut != tc.stderr {
			t.Errorf("answer %q: exit %d, stderr %q; want %d, %q", tc.stdin, code, errOut, tc.code, tc.stderr)
		}
		if !strings.Contains(out, "dns:partner-c.example.com") || !strings.Contains(out, "[y/N]") {
			t.Errorf("answer %q: the question did not show the certificate:\n%s", tc.stdin, out)
		}
		if _, err := os.Stat(crt); (err == nil) != tc.written {
			t.Errorf("answer %q: certificate written = %v, want %v", tc.stdin, err == nil, tc.written)
		}
	}
}

func TestPKIErrors(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	pkiMust(t, "init", "--dir", caDir)
	pkiMust(t, "issue", "--dir", caDir, "--usage", "client", "--cn", "taken", "--out", filepath.Join(dir, "taken"))
	pkiMust(t, "request", "--cn", "tamper-me", "--out", filepath.Join(dir, "p"))
	csr, _ := os.ReadFile(filepath.Join(dir, "p.csr"))
	block, _ := pem.Decode(csr)
	bad := bytes.Replace(block.Bytes, []byte("tamper-me"), []byte("tamper-it"), 1)
	if bytes.Equal(bad, block.Bytes) {
		t.Fatal("could not alter the request")
	}
	os.WriteFile(filepath.Join(dir, "bad.csr"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: bad}), 0o644)
	noCA := filepath.Join(dir, "nothing")

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // the first line of stderr
	}{
		{"no action", nil, 2, "usage: postern pki ACTION [flags]"},
		{"unknown action", []string{"frobnicate"}, 2, `postern pki: unknown action "frobnicate"`},
		{"help", []string{"issue", "-h"}, 0, "usage: postern pki issue --usage server|client|both [--cn NAME] [--dns NAME]... [--ip ADDR]... [--uri URI]... [--ou OU]... [--out PREFIX]"},
		{"init twice", []string{"init", "--dir", caDir}, 1, "postern pki init: " + filepath.Join(caDir, pki.CertFile) + ": a CA already exists there: use it with --dir " + caDir + ", or choose another --dir"},
		{"issue without usage", []string{"issue", "--dir", caDir, "--cn", "x"}, 2, "postern pki issue: --usage is required: server (accepts tunnels), client (dials tunnels) or both"},
		{"issue bad usage", []string{"issue", "--usage", "sideways"}, 2, `invalid value "sideways" for flag -usage: unknown usage "sideways": use server (accepts tunnels), client (dials tunnels) or both`},
		{"issue bad validity", []string{"issue", "--validity", "5w"}, 2, `invalid value "5w" for flag -validity: invalid duration "5w": use a number with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d"`},
		{"issue bad ip", []string{"issue", "--ip", "10.0.0.300"}, 2, `invalid value "10.0.0.300" for flag -ip: "10.0.0.300" is not an IP address`},
		{"issue no CA", []string{"issue", "--dir", noCA, "--usage", "client", "--cn", "x", "--out", filepath.Join(dir, "x")}, 1, "postern pki issue: no CA in " + noCA},
		{"issue over a file", []string{"issue", "--dir", caDir, "--usage", "client", "--cn", "taken", "--out", filepath.Join(dir, "taken")}, 1, "postern pki issue: " + filepath.Join(dir, "taken.crt") + " already exists: remove it or choose another --out; to renew it in place: postern pki issue --renew --out " + filepath.Join(dir, "taken")},
		{"issue nothing to name", []string{"issue", "--dir", caDir, "--usage", "client"}, 2, "postern pki issue: --out PREFIX is required when there is no --cn or --dns to name the files after"},
		{"issue no identity", []string{"issue", "--dir", caDir, "--usage", "client", "--out", filepath.Join(dir, "anon")}, 1, "postern pki issue: no identity: give a common name, a DNS name, an IP address or a URI"},
		{"issue extra argument", []string{"issue", "--usage", "client", "stray"}, 2, `postern pki issue: unexpected argument "stray": this action takes flags only`},
		{"sign without file", []string{"sign", "--dir", caDir, "--usage", "client"}, 2, "postern pki sign: missing argument: see the usage below"},
		{"revoke two", []string{"revoke", "--dir", caDir, "ab", "cd"}, 2, `postern pki revoke: too many arguments ["ab" "cd"]: give one file or serial at a time`},
		{"sign tampered", []string{"sign", "--dir", caDir, "--usage", "client", "--yes", filepath.Join(dir, "bad.csr")}, 1, "postern pki sign: " + filepath.Join(dir, "bad.csr") + ": request signature does not verify (altered or corrupt; ask for a new one)"},
		{"sign a certificate", []string{"sign", "--dir", caDir, "--usage", "client", "--yes", "--out", filepath.Join(dir, "y"), filepath.Join(dir, "taken.crt")}, 1, "postern pki sign: " + filepath.Join(dir, "taken.crt") + " holds no certificate request (CSR): the partner makes one with `postern pki request`"},
		{"revoke unknown serial", []string{"revoke", "--dir", caDir, "abc123"}, 1, "postern pki revoke: serial abc123: not issued by this CA (it is not in index.json"},
		{"revoke bad reason", []string{"revoke", "--dir", caDir, "--reason", "boredom", "abc123"}, 2, `postern pki revoke: unknown revocation reason "boredom"`},
		{"show garbage", []string{"show", filepath.Join(dir, "p.key"), filepath.Join(caDir, pki.IndexFile)}, 1, "postern pki show: " + filepath.Join(caDir, pki.IndexFile) + ": not a certificate, certificate request or CRL, in PEM or DER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := pkiRun(t, "", tc.args...)
			first, _, _ := strings.Cut(errOut, "\n")
			if code != tc.code || !strings.HasPrefix(first, tc.stderr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a first line starting %q", code, errOut, tc.code, tc.stderr)
			}
		})
	}
}

func TestPKIParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"90d", 90 * 24 * time.Hour},
		{"10y", 3650 * 24 * time.Hour},
		{"12h", 12 * time.Hour},
		{"1h30m", 90 * time.Minute},
		{"0d", 0},
		{"-5d", 0},
		{"d", 0},
		{"101y", 0},
		{"99999999999999d", 0},
		{"-1h", 0},
		{"5w", 0},
	} {
		got, err := pkiParseDuration(tc.in)
		if got != tc.want || (err == nil) != (tc.want > 0) {
			t.Errorf("pkiParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestPKIShowStdin reads a file from standard input with "-".
func TestPKIShowStdin(t *testing.T) {
	ca, err := pki.NewCA(pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(pki.IssueOptions{Names: pki.Names{CommonName: "from-stdin"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := pkiMain([]string{"show", "-"}, bytes.NewReader(certPEM), &out, io.Discard); code != 0 || !strings.Contains(out.String(), "cn:from-stdin") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
}
