package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/internal/testproxy"
)

// dialRecorder is an agent's dial function that records every address
// the agent itself connects to.
type dialRecorder struct {
	mu    sync.Mutex
	addrs []string
}

func (r *dialRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, addr)
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (r *dialRecorder) dialed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.addrs...)
}

// shaTransfer sends size random bytes through the forward at addr to an
// echo service and checks that what comes back has the same SHA-256.
func shaTransfer(t *testing.T, addr string, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	c := testnet.Dial(t, addr)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.CloseWrite()
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil || n != int64(size) {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("SHA-256 of the %d bytes that came back differs from what was sent", size)
	}
}

// withProxy adds proxy keys to the [[client]] of a siteTOML.
func withProxy(toml, keys string) string {
	return strings.Replace(toml, "backoff_max = \"500ms\"\n", "backoff_max = \"500ms\"\n"+keys+"\n", 1)
}

// TestTunnelThroughSquid: a tunnel through squid with Basic auth carries
// a SHA-256-checked transfer, is cut, comes back through squid, and
// carries another. The site never connects to the hub itself.
func TestTunnelThroughSquid(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{Users: map[string]string{"svc-postern": "tunnel pass"}})
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := testnet.Listen(t)
	testnet.Serve(t, target, testnet.Echo)
	var ct connTracker
	hub := startWith(t, dir, "hub", hubTOML(p, serviceTOML("bulk", target.Addr().String(), "dns:site-a.test")), Options{Listen: ct.listen})
	pass := filepath.Join(dir, "proxy.pass")
	os.WriteFile(pass, []byte("tunnel pass\n"), 0o600)
	var rec dialRecorder
	site := startWith(t, dir, "site", withProxy(siteTOML(p, hub.ServerAddrs()[0].String(), "bulk"),
		fmt.Sprintf("proxy = \"http://svc-postern@%s\"\nproxy_password_file = %q", squid.Addr, pass)), Options{Dial: rec.dial})
	site.log.WaitFor(t, 20*time.Second, "tunnel connected", "tunnel=hub", "via=http://svc-postern@"+squid.Addr)
	fwd := site.ForwardAddrs()[0].String()
	shaTransfer(t, fwd, 4<<20)

	ct.cut() // the hub drops every tunnel connection, as a network failure would
	site.log.WaitFor(t, 20*time.Second, "tunnel lost; reconnecting", "tunnel=hub")
	shaTransfer(t, fwd, 4<<20) // the forward waits for the tunnel to come back

	dialed := rec.dialed()
	if len(dialed) < 2 {
		t.Errorf("the site dialed %q; want at least two tunnels, each through squid", dialed)
	}
	for _, a := range dialed {
		if a != squid.Addr {
			t.Errorf("the site dialed %s itself; every dial must go to the proxy %s", a, squid.Addr)
		}
	}
	squid.Stop() // flushes its access log
	if log := squid.Log(); strings.Count(log, "CONNECT "+hub.ServerAddrs()[0].String()) < 2 || !strings.Contains(log, "svc-postern") {
		t.Errorf("squid's access log does not show two authenticated CONNECTs to the hub:\n%s", log)
	}
}

// TestPlainClientThroughSquid: a mux = false client takes the same path.
func TestPlainClientThroughSquid(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{})
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := testnet.Listen(t)
	testnet.Serve(t, target, testnet.Echo)
	hub := start(t, dir, "hub", strings.Replace(hubTOML(p, serviceTOML("echo", target.Addr().String(), "dns:site-a.test")),
		`listen = "127.0.0.1:0"`, "listen = \"127.0.0.1:0\"\nmux = false\nservice = \"echo\"", 1))
	var rec dialRecorder
	toml := strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String(), "echo"), "[[client]]\n", "[[client]]\nmux = false\n", 1)
	site := startWith(t, dir, "site", withProxy(toml, fmt.Sprintf("proxy = %q", "http://"+squid.Addr)), Options{Dial: rec.dial})
	shaTransfer(t, site.ForwardAddrs()[0].String(), 1<<20)
	for _, a := range rec.dialed() {
		if a != squid.Addr {
			t.Errorf("the site dialed %s itself; every dial must go to the proxy %s", a, squid.Addr)
		}
	}
	if len(rec.dialed()) == 0 {
		t.Error("the site dialed nothing")
	}
}

// TestTunnelThroughDante: the same tunnel through a SOCKS5 proxy.
func TestTunnelThroughDante(t *testing.T) {
	dante := testproxy.StartDante(t, false)
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := testnet.Listen(t)
	testnet.Serve(t, target, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("bulk", target.Addr().String(), "dns:site-a.test")))
	var rec dialRecorder
	site := startWith(t, dir, "site", withProxy(siteTOML(p, hub.ServerAddrs()[0].String(), "bulk"),
		fmt.Sprintf("proxy = %q", "socks5://"+dante.Addr)), Options{Dial: rec.dial})
	site.log.WaitFor(t, 20*time.Second, "tunnel connected", "tunnel=hub", "via=socks5://"+dante.Addr)
	shaTransfer(t, site.ForwardAddrs()[0].String(), 4<<20)
	for _, a := range rec.dialed() {
		if a != dante.Addr {
			t.Errorf("the site dialed %s itself; every dial must go to the proxy %s", a, dante.Addr)
		}
	}
}
