package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// countLines counts the lines of log that contain every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if containsAll(line, parts) {
			n++
		}
	}
	return n
}

// running is an agent started for a test.
type running struct {
	*Agent
	log    *testnet.LogBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

// stop drains the agent and waits for Run to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop within 60s")
	}
}

// start writes toml to a file in dir, builds the agent and runs it until
// the test ends.
func start(t testing.TB, dir, name, toml string) *running {
	t.Helper()
	return startWith(t, dir, name, toml, Options{})
}

// startWith is start with network options (to watch or cut connections).
func startWith(t testing.TB, dir, name, toml string, opts Options) *running {
	t.Helper()
	path := filepath.Join(dir, name+".toml")
	testca.WriteFile(t, path, []byte(toml))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testnet.LogBuffer{}
	level := slog.LevelDebug // unless the test sets [log] level itself
	if strings.Contains(toml, "[log]") {
		level.UnmarshalText([]byte(cfg.Log.Level))
	}
	lg := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t, name}), &slog.HandlerOptions{Level: level}))
	a, err := New(cfg, lg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, log: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// testWriter sends agent logs to t.Log when -v is given.
type testWriter struct {
	t    testing.TB
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Logf("[%s] %s", w.name, strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// pki is a CA with a hub certificate and a site certificate on disk.
type pki struct {
	ca        *testca.CA
	hub, site testca.Files
}

func newPKI(t testing.TB, dir string) *pki {
	ca := testca.New(t, "Test Partners CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	site := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	return &pki{ca: ca, hub: hub.Write(t, dir, "hub", ca), site: site.Write(t, dir, "site", ca)}
}

// hubTOML is a hub that serves the given services on an ephemeral port.
func hubTOML(p *pki, services string) string {
	return fmt.Sprintf(`
name = "hub"
shutdown_timeout = "5s"
[tunnel]
open_timeout = "60s" # loaded CI machines run -race tests side by side
[tls]
cert = %q
key = %q
ca = %q
[[server]]
listen = "127.0.0.1:0"
%s`, p.hub.Cert, p.hub.Key, p.hub.CA, services)
}

// siteTOML is a site that dials addr and forwards each named service from
// an ephemeral local port.
func siteTOML(p *pki, addr string, services ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
name = "site-a"
shutdown_timeout = "5s"
[tunnel]
open_timeout = "60s"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"
`, p.site.Cert, p.site.Key, p.site.CA, addr)
	for _, s := range services {
		fmt.Fprintf(&b, "[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = %q\nvia = \"hub\"\ntunnel_wait = \"3s\"\n", s)
	}
	return b.String()
}

func serviceTOML(name, target string, allow ...string) string {
	q := make([]string, len(allow))
	for i, a := range allow {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("[[service]]\nname = %q\ntarget = %q\nallow = [%s]\n", name, target, strings.Join(q, ", "))
}

// twoPartService answers each connection with "part one;", then, once
// release is closed (or after 30s), with "part two" and a half-close: a
// transfer a test can hold in flight. It returns the service's address.
func twoPartService(t testing.TB, release <-chan struct{}) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte("part one;"))
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		c.Write([]byte("part two"))
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	return ln.Addr().String()
}

// startPair runs a hub with services and a site with a forward per service
// name in forwards; it waits for the tunnel.
func startPair(t testing.TB, services string, forwards ...string) (hub, site *running) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub = start(t, dir, "hub", hubTOML(p, services))
	site = start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String(), forwards...))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	return hub, site
}

// connTracker records the connections a listener accepted, so a test can
// cut them as a network failure would.
type connTracker struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (ct *connTracker) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return trackingListener{ln, ct}, nil
}

type trackingListener struct {
	net.Listener
	ct *connTracker
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.ct.mu.Lock()
		l.ct.conns = append(l.ct.conns, c)
		l.ct.mu.Unlock()
	}
	return c, err
}

// cut closes every tracked connection.
func (ct *connTracker) cut() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, c := range ct.conns {
		c.Close()
	}
	ct.conns = nil
}

func poolOf(ca *testca.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
