// Package testpebble runs a Pebble ACME test server on loopback for tests.
//
// Pebble is built from the module proxy (Version) once, into the user cache
// folder, and reused by later test runs.
// When it cannot be built the test is skipped with the reason, or fails
// when CI=true. Pebble reads its listen addresses from a JSON file and
// cannot take a listener, so Start picks free loopback ports by binding
// :0 and closing (the one place Postern's tests do this) and starts again
// with fresh ports when Pebble then cannot bind them.
package testpebble

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the Pebble module version the tests run.
const Version = "v2.10.3"

const module = "github.com/letsencrypt/pebble/v2"

var build struct {
	once     sync.Once
	bin, dir string // the binary and the module's source folder
	err      error
}

// binary builds Pebble once; it skips or fails t when that is impossible.
func binary(t testing.TB) (bin, src string) {
	t.Helper()
	build.once.Do(func() {
		// Kept in the user's cache folder by version, so that each test
		// binary does not leave a 12 MB copy behind.
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		build.bin = filepath.Join(cache, "postern-test", "pebble-"+Version)
		if _, err := os.Stat(build.bin); err != nil {
			build.err = install(build.bin)
			if build.err != nil {
				return
			}
		}
		var dl struct{ Dir string }
		msg, err := exec.Command("go", "mod", "download", "-json", module+"@"+Version).Output()
		if err == nil {
			err = json.Unmarshal(msg, &dl)
		}
		if err != nil || dl.Dir == "" {
			build.err = fmt.Errorf("go mod download %s@%s: %v", module, Version, err)
			return
		}
		build.dir = dl.Dir
	})
	if build.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pebble is needed under CI=true: %v", build.err)
		}
		t.Skipf("skipping: pebble (ACME test server) unavailable: %v", build.err)
	}
	return build.bin, build.dir
}

// install builds Pebble into a temporary folder beside bin and renames
// it into place, so test binaries running at once never see half a file.
func install(bin string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(bin), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", module+"/cmd/pebble@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s/cmd/pebble@%s: %v: %s", module, Version, err, bytes.TrimSpace(msg))
	}
	return os.Rename(filepath.Join(tmp, "pebble"), bin)
}

// Pebble is a running Pebble server.
type Pebble struct {
	Directory string // the ACME directory URL
	// TLSRoots is the path of the PEM root that signs Pebble's own HTTPS
	// certificate (give it to the ACME client).
	TLSRoots string
	// IssuerRoots is the PEM of the root that issues the ACME certificates
	// (the sites' ca bundle); Intermediate the PEM of the issuing CA.
	IssuerRoots, Intermediate []byte
}

// Options tune the server.
type Options struct {
	Validity time.Duration // certificate lifetime; 0 = Pebble's default (90 days)
	// HTTPPort, when set, makes Pebble validate http-01 challenges for
	// real, by fetching them from this port of each domain (resolved by
	// the system resolver: use "localhost"). 0: challenges always pass.
	HTTPPort int
}

// Start runs Pebble until the test ends. No nonce is rejected, for speed.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	bin, src := binary(t)
	var last string
	for range 5 {
		p, out, ok := try(t, bin, src, o)
		if ok {
			return p
		}
		last = out
		if !strings.Contains(out, "address already in use") {
			break
		}
	}
	t.Fatalf("pebble did not start:\n%s", last)
	return nil
}

// freePort is a loopback port nobody listened on a moment ago.
func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func try(t testing.TB, bin, src string, o Options) (*Pebble, string, bool) {
	dir := t.TempDir()
	listen, mgmt := freePort(t), freePort(t)
	httpPort := 5002 // unused: challenges always pass
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}
	if o.HTTPPort != 0 {
		httpPort = o.HTTPPort
	} else {
		env = append(env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	validity := uint64(o.Validity / time.Second)
	if validity == 0 {
		validity = 7776000
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": filepath.Join(src, "test/certs/localhost/cert.pem"),
		"privateKey":  filepath.Join(src, "test/certs/localhost/key.pem"),
		"httpPort":    httpPort, "tlsPort": 5001,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter":   map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm": "ecdsa",
		"profiles":     map[string]any{"default": map[string]any{"description": "test", "validityPeriod": validity}},
	}}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "-config", path)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	roots := x509.NewCertPool()
	minica := filepath.Join(src, "test/certs/pebble.minica.pem")
	pem, err := os.ReadFile(minica)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		stop()
		t.Fatalf("pebble test root %s: %v", minica, err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	p := &Pebble{Directory: "https://" + listen + "/dir", TLSRoots: minica}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, derr := get(hc, p.Directory)
		root, rerr := get(hc, "https://"+mgmt+"/roots/0")
		inter, ierr := get(hc, "https://"+mgmt+"/intermediates/0")
		if derr == nil && rerr == nil && ierr == nil {
			p.IssuerRoots, p.Intermediate = root, inter
			t.Cleanup(stop)
			return p, out.String(), true
		}
		select {
		case <-exited:
			return nil, out.String(), false
		case <-time.After(50 * time.Millisecond): // poll for readiness
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Sprintf("%s\nnot ready after 30s: %v %v %v", out.String(), derr, rerr, ierr), false
		}
	}
}

func get(hc *http.Client, url string) ([]byte, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
