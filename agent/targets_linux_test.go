//go:build linux

package agent

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestReadyzTargets: with a health check, /readyz names the service whose
// targets are all down (and not the one whose target is up), and is ready
// again once a target comes back, without any stream trying it.
func TestReadyzTargets(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	services := targetsTOML("db", []string{"unix:" + a, "unix:" + b}, "health_interval = \"100ms\"\n") +
		serviceTOML("echo", ln.Addr().String(), "*") + "[admin]\nlisten = \"127.0.0.1:0\"\n"
	hub, site := startPair(t, services, "db")
	readyz := "http://" + hub.AdminAddr().String() + "/readyz"

	hub.log.WaitFor(t, 10*time.Second, "service target down", "service=db", "target=unix:"+a, "by=\"health check\"")
	hub.log.WaitFor(t, 10*time.Second, "service target down", "service=db", "target=unix:"+b, "by=\"health check\"")
	code, body := get(t, readyz)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `service "db" has no reachable target`) ||
		!strings.Contains(body, b) || strings.Contains(body, `"echo"`) {
		t.Fatalf("/readyz with db's targets down: %d %q", code, body)
	}

	serveUnix(t, b, func(c *net.UnixConn) { answerAfterEOF(c) })
	hub.log.WaitFor(t, 10*time.Second, "service target up", "service=db", "target=unix:"+b, "by=\"health check\"")
	if code, body := get(t, readyz); code != http.StatusOK {
		t.Fatalf("/readyz with b back: %d %q", code, body)
	}
	if got, err := echoOnce(t, site.ForwardAddrs()[0], "back"); err != nil || got != "back" {
		t.Fatalf("stream through the target that came back: %q, %v", got, err)
	}
	hub.log.WaitFor(t, 10*time.Second, "stream closed", "service=db", "target=unix:"+b)
}
