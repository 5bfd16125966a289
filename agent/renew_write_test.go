package agent

import (
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	capki "github.com/postern-tunnel/postern/pki"
)

// TestRenewalCertWriteFailsKeepsPair: a renewal whose certificate cannot
// be written leaves the old key and the old certificate on disk, a pair
// that still matches (a restart loads it), and is reported as failed and
// retried. Before the fix the new key was in place by then, beside the
// old certificate, and a restart found a pair that does not match.
//
// The certificate's write fails as every write in its folder would for a
// full disk or a folder the agent may not write in, but reliably when the
// tests run as root: its file name is 254 bytes, so the temporary file
// beside it (".NAME.tmpDIGITS") is longer than a name may be (255 bytes)
// and cannot be created. The key's write, in the same folder, succeeds.
func TestRenewalCertWriteFailsKeepsPair(t *testing.T) {
	dir := t.TempDir()
	ca, p, _ := renewPKI(t, dir, time.Hour)
	certPEM, keyPEM, err := ca.Issue(capki.IssueOptions{Names: capki.Names{CommonName: "hub", DNSNames: []string{"hub.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}},
		Usage: capki.UsageBoth, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p.hub.Cert = filepath.Join(dir, strings.Repeat("c", 250)+".crt")
	testca.WriteFile(t, p.hub.Cert, certPEM)
	testca.WriteFile(t, p.hub.Key, keyPEM)
	if _, err := os.CreateTemp(dir, "."+filepath.Base(p.hub.Cert)+".tmp*"); err == nil {
		t.Skip("this file system takes names longer than 255 bytes: the certificate's write would not fail")
	}

	hub := start(t, dir, "hub", withTLSKeys(hubTOML(p, ""), `renew_before = "1h"`)+caTOML("2h"))
	hub.log.WaitFor(t, 10*time.Second, "certificate renewal failed; retrying", "retry_in=1s", "file name too long")
	hub.log.WaitFor(t, 10*time.Second, "certificate renewal failed; retrying", "retry_in=2s", "file name too long")
	if st := hub.renewals(p.hub.Cert); st.Renewals != 0 || st.Failures < 2 || !strings.Contains(st.LastError, "file name too long") ||
		!strings.Contains(st.LastError, "are the old pair") {
		t.Errorf("status: %+v, want two failures in a row and no renewal", st)
	}

	gotKey, _ := os.ReadFile(p.hub.Key)
	gotCert, _ := os.ReadFile(p.hub.Cert)
	if !bytes.Equal(gotCert, certPEM) {
		t.Error("the certificate on disk changed")
	}
	if !bytes.Equal(gotKey, keyPEM) {
		t.Error("the key on disk is not the old key: the renewal replaced it though the certificate could not follow")
	}
	if _, err := tls.X509KeyPair(gotCert, gotKey); err != nil {
		t.Errorf("the key and certificate on disk do not match (a restart would not start): %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
