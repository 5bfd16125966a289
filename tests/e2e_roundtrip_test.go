//go:build unix

package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2ERoundTrip: a hub offering an echo service and an HTTP service, a
// site forwarding both. 1 MiB of random data comes back through the echo
// forward intact and with a clean end; an HTTP GET through the other
// forward gets the app's answer; on SIGTERM both agents log their stop and
// exit 0 within a few seconds.
func TestE2ERoundTrip(t *testing.T) {
	e2eBinary(t) // build before any timing starts
	echoAddr := e2eServe(t, testnet.Echo)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Legacy-App", "yes")
		fmt.Fprintf(w, "legacy app: %s %s", r.Method, r.URL.Path)
	}))
	t.Cleanup(web.Close)

	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0",
		e2eServiceTOML("echo", echoAddr, "cn:site-a"),
		e2eServiceTOML("web", web.Listener.Addr().String(), "dns:site-a.test"))))
	hubAddr := hub.serverAddr(t)
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, "5s", "echo", "web")))
	echoFwd, webFwd := site.forwardAddr(t, "echo"), site.forwardAddr(t, "web")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)
	hub.log.WaitFor(t, 5*time.Second, "tunnel accepted", "peer_addr=", "site-a")

	t.Run("echo 1MiB", func(t *testing.T) {
		data := make([]byte, 1<<20)
		rand.Read(data)
		c := testnet.Dial(t, echoFwd)
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
		if err != nil {
			t.Fatalf("read after %d bytes: %v (want all of it and a clean end)", n, err)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("write: %v", err)
		}
		want := sha256.Sum256(data)
		if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("echo returned %d bytes with SHA-256 %x; sent %d bytes with %x", n, h.Sum(nil), len(data), want)
		}
	})

	t.Run("http GET", func(t *testing.T) {
		// No keep-alive: an idle connection would count as a stream in
		// flight when the agents drain.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for _, path := range []string{"/", "/orders/42"} {
			resp, err := client.Get("http://" + webFwd + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("GET %s: body: %v", path, err)
			}
			if want := "legacy app: GET " + path; resp.StatusCode != http.StatusOK || string(body) != want || resp.Header.Get("X-Legacy-App") != "yes" {
				t.Fatalf("GET %s: %s %q (X-Legacy-App %q), want 200 %q", path, resp.Status, body, resp.Header.Get("X-Legacy-App"), want)
			}
		}
	})

	start := time.Now()
	site.signal(t, syscall.SIGTERM)
	hub.signal(t, syscall.SIGTERM)
	for _, a := range []*e2eAgent{site, hub} {
		if code := a.waitExit(t, 5*time.Second); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM, want 0", a.name, code)
		}
	}
	t.Logf("both agents stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	site.log.WaitFor(t, time.Second, "agent stopping: no new connections", "agent=site-a")
	site.log.WaitFor(t, time.Second, "agent stopped", "agent=site-a")
	hub.log.WaitFor(t, time.Second, "agent stopping: no new connections", "agent=hub")
	hub.log.WaitFor(t, time.Second, "agent stopped", "agent=hub")
}
