//go:build linux

package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestE2EUnixSocketsOverIPv6: the hub listens on [::1]:0 and its service
// targets a legacy app's Unix socket (a path relative to the config); the
// site dials the hub's IPv6 address and its forward listens on a Unix
// socket. 1 MiB goes through and back intact. On SIGTERM the site removes
// its socket file; after a SIGKILL the file stays, and the next start
// replaces it.
func TestE2EUnixSocketsOverIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback, which CI needs for this test: %v", err)
		}
		t.Skipf("skipped: this machine has no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	e2eBinary(t)
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)

	// The legacy app: reads a request to its end, then answers with it.
	appLn, err := net.Listen("unix", filepath.Join(dir, "app.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { appLn.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := appLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := io.ReadAll(c)
				if err == nil {
					c.Write(req)
				}
			}()
		}
	}()

	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "[::1]:0",
		e2eServiceTOML("app", "unix:app.sock", "cn:site-a"))))
	hubAddr := hub.serverAddr(t)
	if !strings.HasPrefix(hubAddr, "[::1]:") {
		t.Fatalf("hub listens on %s, want [::1]:PORT", hubAddr)
	}
	siteTOML := strings.Replace(e2eSiteTOML(certs, hubAddr, "5s", "app"), `listen = "127.0.0.1:0"`, `listen = "unix:site.sock"`, 1)
	siteConfig := e2eWriteConfig(t, dir, "site", siteTOML)
	sock := filepath.Join(dir, "site.sock")

	startSite := func() *e2eAgent {
		site := e2eStartAgent(t, "site", siteConfig)
		if got := site.forwardAddr(t, "app"); got != sock {
			t.Fatalf("forward listens on %s, want %s", got, sock)
		}
		site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)
		return site
	}
	roundTrip := func() {
		t.Helper()
		data := make([]byte, 1<<20)
		rand.Read(data)
		c, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			if err == nil {
				err = c.(*net.UnixConn).CloseWrite()
			}
			wrote <- err
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil || <-wrote != nil {
			t.Fatalf("round trip: read %d bytes, %v", n, err)
		}
		if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("got %d bytes back, SHA-256 differs from the %d sent", n, len(data))
		}
	}

	site := startSite()
	roundTrip()
	site.signal(t, syscall.SIGTERM)
	if code := site.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("site exit code %d after SIGTERM", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file after SIGTERM: %v, want it removed", err)
	}

	site = startSite()
	site.signal(t, syscall.SIGKILL)
	site.waitExit(t, 15*time.Second)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket file after SIGKILL: %v, %v; want it left behind", fi, err)
	}
	site = startSite() // replaces the stale file
	roundTrip()
	site.signal(t, syscall.SIGTERM)
	site.waitExit(t, 15*time.Second)
	hub.signal(t, syscall.SIGTERM)
	hub.waitExit(t, 15*time.Second)
}
