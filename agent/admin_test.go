package agent

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminEndpoint: /healthz answers, /readyz follows the tunnel, and
// /metrics counts streams and tunnels.
func TestAdminEndpoint(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")))
	hubAddr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, hubAddr, "echo")+"[admin]\nlisten = \"127.0.0.1:0\"\n")
	base := "http://" + site.AdminAddr().String()
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	waitTunnels(t, site, 1)

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz with the tunnel up: %d %q", code, body)
	}
	if got, err := echoOnce(t, site.ForwardAddrs()[0], "count me"); err != nil || got != "count me" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, metrics := get(t, base+"/metrics")
		if strings.Contains(metrics, `postern_streams_total{result="ok",side="forward"} 1`) &&
			strings.Contains(metrics, `postern_bytes_total{direction="sent"} 8`) &&
			strings.Contains(metrics, "postern_tunnels_dialed 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks the stream and tunnel counts:\n%s", metrics)
		}
	}

	hub.stop(t)
	site.log.WaitFor(t, 10*time.Second, "tunnel lost; reconnecting", "tunnel=hub")
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `no tunnel "hub" up`) {
		t.Fatalf("/readyz with the hub gone: %d %q", code, body)
	}
}

// TestNewFailsCleanly: a setup error (here a missing certificate) is a
// message naming the file, not a panic, and leaves no listener open.
func TestNewFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	toml := strings.Replace(hubTOML(p, ""), p.hub.Cert, dir+"/missing.crt", 1) + "[admin]\nlisten = \"127.0.0.1:0\"\n"
	path := dir + "/hub.toml"
	testca.WriteFile(t, path, []byte(toml))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("New with a missing certificate: %v", err)
	}
}
