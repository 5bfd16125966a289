//go:build unix

package tests

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/pki"
)

// e2eCmd runs the postern binary with args and returns stdout, stderr and
// the exit code.
func e2eCmd(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(e2eBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("postern %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// e2eMust is e2eCmd that must succeed; it returns stdout.
func e2eMust(t testing.TB, args ...string) string {
	t.Helper()
	out, errs, code := e2eCmd(t, args...)
	if code != 0 {
		t.Fatalf("postern %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// enrollHub is a hub with a `postern pki` CA folder and [ca], serving echo
// to the site the test enrolls.
type enrollHub struct {
	dir, pki, config string
	agent            *e2eAgent
	addr             string
}

func e2eEnrollHub(t *testing.T, echoAddr string) *enrollHub {
	t.Helper()
	dir := t.TempDir()
	h := &enrollHub{dir: dir, pki: filepath.Join(dir, "pki")}
	e2eMust(t, "pki", "init", "--dir", h.pki, "--cn", "E2E Hub CA")
	e2eMust(t, "pki", "issue", "--dir", h.pki, "--usage", "server", "--dns", "hub.test", "--ip", "127.0.0.1", "--out", filepath.Join(dir, "hub"))
	h.config = e2eWriteConfig(t, dir, "hub", fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"

[tls]
cert = "hub.crt"
key = "hub.key"
ca = "pki/ca.crt"

[ca]
dir = "pki"
identities = ["dns:*.sites.test"]

[[server]]
listen = "127.0.0.1:0"

%s`, e2eServiceTOML("echo", echoAddr, "dns:site-b.sites.test")))
	h.agent = e2eStartAgent(t, "hub", h.config)
	h.addr = h.agent.serverAddr(t)
	return h
}

func (h *enrollHub) invite(t *testing.T, args ...string) string {
	t.Helper()
	return strings.TrimSpace(e2eMust(t, append([]string{"pki", "invite", "-c", h.config, "--hub", h.addr}, args...)...))
}

// e2eEnrollSite writes a site config in a new folder whose [tls] files do
// not exist yet; it forwards echo to the hub.
func e2eEnrollSite(t *testing.T, hubAddr string) (dir, config string) {
	t.Helper()
	dir = t.TempDir()
	return dir, e2eWriteConfig(t, dir, "site", fmt.Sprintf(`name = "site-b"
shutdown_timeout = "5s"

[tls]
cert = "certs/site.crt"
key = "certs/site.key"
ca = "certs/ca.crt"

[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"

[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "hub"
tunnel_wait = "3s"
`, hubAddr))
}

// TestE2EEnroll: from nothing to a working tunnel with three commands
// (pki init + invite on the hub, enroll on the site), then run. The
// site's private key never leaves its folder: the hub's record of the
// enrollment holds only the CSR (for the site's key), the bytes the hub
// read are exactly the token and the CSR, and no file on the hub's side
// holds the key.
func TestE2EEnroll(t *testing.T) {
	e2eBinary(t)
	echoAddr := e2eServe(t, testnet.Echo)
	hub := e2eEnrollHub(t, echoAddr)
	token := hub.invite(t, "--dns", "site-b.sites.test")
	tok, err := pki.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}

	siteDir, siteConfig := e2eEnrollSite(t, hub.addr)
	out := e2eMust(t, "enroll", "--token", token, "-c", siteConfig)
	if !strings.Contains(out, "ready: postern run -c "+siteConfig) {
		t.Fatalf("enroll said:\n%s", out)
	}
	keyPath := filepath.Join(siteDir, "certs", "site.key")
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v (want 0600)", err, fi.Mode().Perm())
	}
	keyPEM, _ := os.ReadFile(keyPath)
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(siteDir, "certs", "site.crt"))
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) || cert.DNSNames[0] != "site-b.sites.test" {
		t.Fatalf("certificate %v is not for the site's key", cert.DNSNames)
	}
	caPEM, _ := os.ReadFile(filepath.Join(siteDir, "certs", "ca.crt"))
	if ca, err := pki.ParseCertPEM(caPEM); err != nil || sha256.Sum256(ca.Raw) != tok.CA {
		t.Fatalf("ca.crt is not the token's CA (%v)", err)
	}

	line := hub.agent.log.WaitFor(t, 5*time.Second, "enrollment granted", "peer_addr=127.0.0.1:", "invitation="+tok.IDString(), "dns:site-b.sites.test")
	var rec pki.Invitation
	data, err := os.ReadFile(filepath.Join(hub.pki, pki.InvitationsDir, tok.IDString()+".json"))
	if err == nil {
		err = json.Unmarshal(data, &rec)
	}
	if err != nil || rec.UsedAt == nil || !strings.HasPrefix(rec.UsedBy, "127.0.0.1:") {
		t.Fatalf("invitation record: %v\n%s", err, data)
	}
	block, _ := pem.Decode([]byte(rec.Request))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("record holds no CSR: %q", rec.Request)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Fatalf("recorded CSR is not for the site's key (%v)", err)
	}
	// What the hub read: version, token and CSR with their lengths, nothing more.
	if want := fmt.Sprintf("request_bytes=%d", 1+2+len(token)+2+len(block.Bytes)); !strings.Contains(line, want) {
		t.Fatalf("hub read more than the token and the CSR: %s (want %s)", line, want)
	}
	// No file outside the site's folder holds the key.
	// (the private scalar, raw and as the PEM body's text around it)
	scalar, err := key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	needles := [][]byte{scalar, []byte(strings.Split(string(keyPEM), "\n")[1][40:])}
	filepath.WalkDir(hub.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s holds the site's private key", path)
			}
		}
		return nil
	})

	site := e2eStartAgent(t, "site", siteConfig)
	fwd := site.forwardAddr(t, "echo")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	data = make([]byte, 1<<20)
	rand.Read(data)
	c := testnet.Dial(t, fwd)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || <-wrote != nil {
		t.Fatalf("echo: %d bytes, %v", n, err)
	}
	if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echo returned %d bytes, SHA-256 %x; sent %d, %x", n, h.Sum(nil), len(data), want)
	}
}

// TestE2EEnrollOnRun: `postern run` with [enroll] token_file and no
// certificate yet enrolls first, then connects.
func TestE2EEnrollOnRun(t *testing.T) {
	echoAddr := e2eServe(t, testnet.Echo)
	hub := e2eEnrollHub(t, echoAddr)
	token := hub.invite(t, "--dns", "site-b.sites.test")
	siteDir, siteConfig := e2eEnrollSite(t, hub.addr)
	os.WriteFile(filepath.Join(siteDir, "invite.token"), []byte(token+"\n"), 0o600)
	cfg, _ := os.ReadFile(siteConfig)
	os.WriteFile(siteConfig, append(cfg, "\n[enroll]\ntoken_file = \"invite.token\"\n"...), 0o600)
	site := e2eStartAgent(t, "site", siteConfig)
	site.log.WaitFor(t, 10*time.Second, "enrolled", "hub="+hub.addr)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
}

// TestE2EEnrollRefusals: each way an enrollment is refused is named on the
// site (its exit message) and on the hub (a log line with the source
// address and the cause), and writes nothing on the site.
func TestE2EEnrollRefusals(t *testing.T) {
	hub := e2eEnrollHub(t, "127.0.0.1:9")
	enroll := func(t *testing.T, token string, extra ...string) (string, string) {
		t.Helper()
		dir, cfg := e2eEnrollSite(t, hub.addr)
		_, errs, code := e2eCmd(t, append([]string{"enroll", "--token", token, "-c", cfg}, extra...)...)
		if code != 1 {
			t.Fatalf("enroll exit %d, want 1: %s", code, errs)
		}
		if _, err := os.Stat(filepath.Join(dir, "certs")); err == nil {
			t.Errorf("a refused enrollment wrote %s", filepath.Join(dir, "certs"))
		}
		return dir, errs
	}
	hubRefused := func(t *testing.T, cause, id string) {
		t.Helper()
		hub.agent.log.WaitFor(t, 5*time.Second, "enrollment refused", "peer_addr=127.0.0.1:", "invitation="+id, "cause="+cause)
	}

	t.Run("reuse", func(t *testing.T) {
		token := hub.invite(t, "--dns", "site-b.sites.test")
		_, cfg := e2eEnrollSite(t, hub.addr)
		e2eMust(t, "enroll", "--token", token, "-c", cfg)
		_, errs := enroll(t, token)
		id := must(pki.ParseToken(token)).IDString()
		if !strings.Contains(errs, "enrollment refused by hub "+hub.addr+": used: invitation "+id+" was already used") {
			t.Fatalf("site: %s", errs)
		}
		hubRefused(t, "used", id)
	})
	t.Run("expired", func(t *testing.T) {
		token := hub.invite(t, "--dns", "site-b.sites.test", "--ttl", "1h")
		id := must(pki.ParseToken(token)).IDString()
		// The hub judges expiry by its record: move it into the past.
		path := filepath.Join(hub.pki, pki.InvitationsDir, id+".json")
		var rec map[string]any
		json.Unmarshal(must(os.ReadFile(path)), &rec)
		rec["expires_at"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		os.WriteFile(path, must(json.Marshal(rec)), 0o600)
		_, errs := enroll(t, token)
		if !strings.Contains(errs, ": expired: invitation "+id+" expired on") {
			t.Fatalf("site: %s", errs)
		}
		hubRefused(t, "expired", id)
	})
	t.Run("tampered", func(t *testing.T) {
		tok := must(pki.ParseToken(hub.invite(t, "--dns", "site-b.sites.test")))
		tok.Secret[3] ^= 0x40
		_, errs := enroll(t, tok.String())
		if !strings.Contains(errs, ": tampered: the token's secret does not match invitation "+tok.IDString()) {
			t.Fatalf("site: %s", errs)
		}
		hubRefused(t, "tampered", tok.IDString())
		_, errs = enroll(t, tok.String()[:60])
		if !strings.Contains(errs, "malformed enrollment token") {
			t.Fatalf("site, cut token: %s", errs)
		}
	})
	t.Run("not granted", func(t *testing.T) {
		token := hub.invite(t, "--dns", "site-b.sites.test")
		id := must(pki.ParseToken(token)).IDString()
		_, errs := enroll(t, token, "--dns", "db.sites.test")
		if !strings.Contains(errs, ": not-granted: cn:db.sites.test was not granted by invitation "+id) {
			t.Fatalf("site: %s", errs)
		}
		hubRefused(t, "not-granted", id)
		// [ca] identities bounds the invitation itself.
		_, errs, code := e2eCmd(t, "pki", "invite", "-c", hub.config, "--hub", hub.addr, "--dns", "db.example.com")
		if code != 1 || !strings.Contains(errs, "dns:db.example.com is outside what this CA may grant") {
			t.Fatalf("invite outside [ca] identities: exit %d: %s", code, errs)
		}
	})
	t.Run("another hub", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "pki")
		e2eMust(t, "pki", "init", "--dir", other, "--cn", "Other CA")
		token := strings.TrimSpace(e2eMust(t, "pki", "invite", "--dir", other, "--dns", "site-b.sites.test", "--hub", hub.addr))
		_, errs := enroll(t, token)
		if !strings.Contains(errs, "enrollment refused by this site: hub "+hub.addr+" is another hub") || !strings.Contains(errs, "the token was not sent") {
			t.Fatalf("site: %s", errs)
		}
		// The hub sees a client that refused its certificate, by address.
		hub.agent.log.WaitFor(t, 5*time.Second, "peer_addr=127.0.0.1:", "cause=rejected", "an enrolling site (ALPN postern-enroll/1) refused our certificate")
		if strings.Contains(hub.agent.log.String(), "invitation="+must(pki.ParseToken(token)).IDString()) {
			t.Fatal("the hub saw the token")
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
