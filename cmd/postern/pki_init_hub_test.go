package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/pki"
)

// TestPKIInitHub: `pki init --hub HOST:PORT` makes the CA and the hub's
// server certificate from it (serverAuth, HOST as its DNS name or IP SAN,
// key 0600, recorded in the index like `pki issue`), and `pki invite`
// then sends sites to HOST:PORT without --hub.
func TestPKIInitHub(t *testing.T) {
	for _, tc := range []struct {
		hub, host string
		ip        net.IP
	}{
		{hub: "hub.example.com:7443", host: "hub.example.com"},
		{hub: "Hub.Example.COM:7443", host: "hub.example.com"},
		{hub: "192.0.2.7:443", host: "192.0.2.7", ip: net.ParseIP("192.0.2.7").To4()},
		{hub: "[2001:db8::7]:7443", host: "2001:db8::7", ip: net.ParseIP("2001:db8::7")},
	} {
		t.Run(tc.hub, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			out := pkiMust(t, "init", "--dir", dir, "--cn", "Acme Partners CA", "--hub", tc.hub)
			crtPath, keyPath := filepath.Join(dir, pki.HubCertFile), filepath.Join(dir, pki.HubKeyFile)
			for _, want := range []string{"issued the hub's server certificate CN=" + tc.host, crtPath, keyPath,
				`[tls] cert = "` + crtPath + `", key = "` + keyPath + `"`, "postern pki invite --dir " + dir + " --dns SITE"} {
				if !strings.Contains(out, want) {
					t.Errorf("init output lacks %q:\n%s", want, out)
				}
			}
			ca := pkiReadCertFile(t, filepath.Join(dir, pki.CertFile))
			cert := pkiReadCertFile(t, crtPath)
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("hub certificate does not verify as a server for %s under the new CA: %v", tc.host, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				t.Error("hub certificate verifies as a client: want server only, as `pki issue --usage server`")
			}
			if tc.ip != nil {
				if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(tc.ip) {
					t.Errorf("SANs dns %q ip %v, want ip %v only", cert.DNSNames, cert.IPAddresses, tc.ip)
				}
			} else if !slices.Equal(cert.DNSNames, []string{tc.host}) || len(cert.IPAddresses) != 0 {
				t.Errorf("SANs dns %q ip %v, want dns %s only", cert.DNSNames, cert.IPAddresses, tc.host)
			}
			if _, err := tls.LoadX509KeyPair(crtPath, keyPath); err != nil {
				t.Errorf("hub key and certificate do not pair: %v", err)
			}
			if fi, err := os.Stat(keyPath); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
				t.Errorf("hub key: %v, mode %v, want 0600", err, fi.Mode().Perm())
			}
			c, err := pki.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if issued := c.Issued(); len(issued) != 1 || issued[0].Serial != pki.FormatSerial(cert.SerialNumber) {
				t.Errorf("index holds %+v, want the hub certificate's serial %s", issued, pki.FormatSerial(cert.SerialNumber))
			}

			tok, err := pki.ParseToken(pkiMust(t, "invite", "--dir", dir, "--dns", "site-b.example.com"))
			if err != nil || tok.Hub != tc.hub {
				t.Fatalf("invite without --hub: token hub %q (%v), want %q", tok.Hub, err, tc.hub)
			}
			tok, _ = pki.ParseToken(pkiMust(t, "invite", "--dir", dir, "--dns", "site-c.example.com", "--hub", "other.example.com:1"))
			if tok.Hub != "other.example.com:1" {
				t.Errorf("--hub did not override the recorded address: %q", tok.Hub)
			}
		})
	}
}

// TestPKIInitHubRefusals: a bad --hub, or hub files already in the
// folder, stop init before any CA is made.
func TestPKIInitHubRefusals(t *testing.T) {
	for _, tc := range []struct {
		hub, file string
		code      int
		want      string
	}{
		{hub: "hub.example.com", code: 2, want: `--hub: hub address "hub.example.com": give the host:port sites dial`},
		{hub: "hub.example.com:0", code: 2, want: "give the host:port sites dial"},
		{hub: "*.example.com:7443", code: 2, want: "a wildcard is not a host sites can dial"},
		{hub: "hub.example.com:7443", file: pki.HubKeyFile, code: 1, want: "hub.key already exists: no CA made"},
		{hub: "hub.example.com:7443", file: pki.HubFile, code: 1, want: "hub.addr already exists: no CA made"},
	} {
		dir := filepath.Join(t.TempDir(), "pki")
		if tc.file != "" {
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, tc.file), []byte("keep\n"), 0o600)
		}
		code, out, errs := pkiRun(t, "", "init", "--dir", dir, "--hub", tc.hub)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("init --hub %s (%s there): exit %d, stderr %s; want exit %d and …%s…", tc.hub, tc.file, code, errs, tc.code, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, pki.CertFile)); err == nil {
			t.Errorf("init --hub %s made a CA anyway:\n%s", tc.hub, out)
		}
		if tc.file != "" {
			if b, _ := os.ReadFile(filepath.Join(dir, tc.file)); string(b) != "keep\n" {
				t.Errorf("%s was replaced: %q", tc.file, b)
			}
		}
	}
	// A recorded address that is not host:port is named, not used.
	dir := filepath.Join(t.TempDir(), "pki")
	pkiMust(t, "init", "--dir", dir)
	os.WriteFile(filepath.Join(dir, pki.HubFile), []byte("hub.example.com\n"), 0o644)
	code, _, errs := pkiRun(t, "", "invite", "--dir", dir, "--dns", "b.example.com")
	if code != 1 || !strings.Contains(errs, filepath.Join(dir, pki.HubFile)+`: hub address "hub.example.com" is not host:port`) {
		t.Errorf("invite with a bad %s: exit %d: %s", pki.HubFile, code, errs)
	}
}
