package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testmetrics"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// statusPair is a hub and a site in this process, JSON-logging, with a
// tunnel between them.
type statusPair struct {
	dir                string
	ca                 *testca.CA
	hubFiles, siteFile testca.Files
	siteCert           *testca.Leaf
	hub, site          *agent.Agent
	hubLog, siteLog    *testnet.LogBuffer
	hubPath, sitePath  string
	echo, reset        net.Listener
}

// runNamed writes text to NAME.toml in dir and runs an agent from it, with
// the logger `postern run` builds, until the test ends.
func runNamed(t *testing.T, dir, name, text string, w io.Writer) (*agent.Agent, string) {
	t.Helper()
	path := filepath.Join(dir, name+".toml")
	testca.WriteFile(t, path, []byte(text))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, newLogger(cfg.Log, w), agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a, path
}

func newStatusPair(t *testing.T) *statusPair {
	t.Helper()
	p := &statusPair{dir: t.TempDir(), ca: testca.New(t, "Test CA"), hubLog: &testnet.LogBuffer{}, siteLog: &testnet.LogBuffer{}}
	p.hubFiles = p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, p.dir, "hub", p.ca)
	p.siteCert = p.ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	p.siteFile = p.siteCert.Write(t, p.dir, "site", p.ca)
	p.echo = testnet.Listen(t)
	testnet.Serve(t, p.echo, testnet.Echo)
	// reset answers every connection with a TCP reset once it has read a byte.
	p.reset = testnet.Listen(t)
	testnet.Serve(t, p.reset, func(c *net.TCPConn) {
		c.Read(make([]byte, 1))
		c.SetLinger(0)
		c.Close()
	})
	p.hub, p.hubPath = runNamed(t, p.dir, "hub", fmt.Sprintf(`name = "hub"
[tls]
cert = %q
key = %q
ca = %q
reload_interval = "1h"
[[server]]
listen = "127.0.0.1:0"
[[service]]
name = "echo"
target = %q
allow = ["dns:site-a.test"]
[[service]]
name = "cut"
target = %q
allow = ["dns:site-a.test"]
[admin]
listen = "127.0.0.1:0"
[log]
format = "json"
`, p.hubFiles.Cert, p.hubFiles.Key, p.hubFiles.CA, p.echo.Addr(), p.reset.Addr()), p.hubLog)
	p.site, p.sitePath = runNamed(t, p.dir, "site", fmt.Sprintf(`name = "site-a"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "hub"
[[forward]]
listen = "127.0.0.1:0"
service = "nope"
via = "hub"
[[forward]]
listen = "127.0.0.1:0"
service = "cut"
via = "hub"
[log]
format = "json"
`, p.siteFile.Cert, p.siteFile.Key, p.siteFile.CA, p.hub.ServerAddrs()[0]), p.siteLog)
	p.siteLog.WaitFor(t, 10*time.Second, `"msg":"tunnel connected"`)
	return p
}

// echoOnce sends msg through the forward at addr, half-closes and reads
// the answer to its end; it returns the app's local address.
func echoOnce(t *testing.T, addr net.Addr, msg string) (string, string, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
	if err != nil { // a refusal's reset can reach the connect itself
		return "", "", err
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// A reset is reported to one call only: the write's error counts.
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", c.LocalAddr().String(), err
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	return string(got), c.LocalAddr().String(), err
}

func statusJSON(t *testing.T, path string) agent.Status {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"-c", path, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("postern status --json -c %s: exit %d\n%s", path, code, errOut.String())
	}
	var st agent.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("postern status --json: %v\n%s", err, out.String())
	}
	return st
}

// waitStatus polls the status until ok holds, for up to 10s.
func waitStatus(t *testing.T, path string, what string, ok func(agent.Status) bool) agent.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := statusJSON(t, path)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", "  ")
			t.Fatalf("status never showed %s:\n%s", what, b)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

// logLines are the JSON log lines whose msg is msg.
func logLines(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestStatusMetricsAccessLog: after known traffic (one clean stream, one
// refused, one reset by the target, one refused handshake), `postern
// status --json` on both agents, the hub's /metrics and both access logs
// say exactly what happened.
func TestStatusMetricsAccessLog(t *testing.T) {
	p := newStatusPair(t)
	fwd := p.site.ForwardAddrs()
	const msg = "hello status"
	got, appAddr, err := echoOnce(t, fwd[0], msg)
	if err != nil || got != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if got, _, err := echoOnce(t, fwd[1], "x"); !errors.Is(err, syscall.ECONNRESET) || got != "" {
		t.Fatalf("unknown service: %q, %v; want a reset", got, err)
	}
	if _, cutAddr, err := echoOnce(t, fwd[2], "cut me"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("target that resets: %v (from %s), want a reset", err, cutAddr)
	}
	// A plain HTTP request to the tunnel port: a refused handshake.
	probe := testnet.Dial(t, p.hub.ServerAddrs()[0].String())
	probe.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	io.Copy(io.Discard, probe)
	probe.Close()

	hub := waitStatus(t, p.hubPath, "3 streams ended on the hub and a refusal", func(st agent.Status) bool {
		done := 0
		for _, s := range st.Services {
			if s.Open == 0 {
				done += int(s.Total)
			}
		}
		return done == 2 && len(st.Refusals) > 0 && len(st.Tunnels) == 1 && st.Tunnels[0].Streams == 0
	})
	tun := hub.Tunnels[0]
	if hub.Agent != "hub" || hub.Config != p.hubPath {
		t.Errorf("hub status names agent %q config %q", hub.Agent, hub.Config)
	}
	if tun.Direction != "accepted" || !strings.Contains(tun.Peer, "site-a") || tun.PeerLabel != "dns:site-a.test" ||
		!strings.HasPrefix(tun.Addr, "127.0.0.1:") || tun.TLSVersion != "TLS 1.3" || !tun.NotAfter.Equal(p.siteCert.Cert.NotAfter) {
		t.Errorf("hub's tunnel: %+v", tun)
	}
	if tun.Since.IsZero() || tun.Since.After(time.Now()) || time.Since(tun.Since) > time.Minute {
		t.Errorf("hub's tunnel since %v", tun.Since)
	}
	// Framing included: at least the payload each way.
	if tun.Sent < int64(len(msg)) || tun.Received < int64(len(msg)) {
		t.Errorf("hub's tunnel bytes: sent %d received %d, want ≥ %d each", tun.Sent, tun.Received, len(msg))
	}
	svc := map[string]agent.ServiceStatus{}
	for _, s := range hub.Services {
		svc[s.Name] = s
	}
	if s := svc["echo"]; s.Target != p.echo.Addr().String() || s.Total != 1 || s.Open != 0 || s.LastErr != nil ||
		len(s.Targets) != 1 || s.Targets[0].Addr != s.Target || !s.Targets[0].Up {
		t.Errorf("hub's echo service: %+v", s)
	}
	if s := svc["cut"]; s.Total != 1 || s.LastErr == nil || !strings.Contains(s.LastErr.Err, "reset") {
		t.Errorf("hub's cut service: %+v", s)
	}
	r := hub.Refusals[0]
	if r.Addr != "127.0.0.1" || r.Cause != "http" || r.Count != 1 || r.Reason == "" {
		t.Errorf("hub's refusals: %+v", hub.Refusals)
	}

	site := waitStatus(t, p.sitePath, "3 forwarded streams ended", func(st agent.Status) bool {
		n := 0
		for _, f := range st.Forwards {
			if f.Open == 0 {
				n += int(f.Total)
			}
		}
		return n == 3
	})
	if len(site.Tunnels) != 1 || site.Tunnels[0].Direction != "dialed" || site.Tunnels[0].Client != "hub" ||
		site.Tunnels[0].PeerLabel != "hub" || !strings.Contains(site.Tunnels[0].Peer, "hub") {
		t.Errorf("site's tunnels: %+v", site.Tunnels)
	}
	if f := site.Forwards[0]; f.Service != "echo" || f.Via != "hub" || f.Total != 1 || f.LastErr != nil {
		t.Errorf("site's echo forward: %+v", f)
	}
	if f := site.Forwards[1]; f.Total != 1 || f.LastErr == nil || !strings.Contains(f.LastErr.Err, `unknown service "nope"`) {
		t.Errorf("site's nope forward: %+v", f)
	}

	// The human table.
	var out bytes.Buffer
	if code := cmdStatus([]string{"-c", p.hubPath}, &out, io.Discard); code != 0 {
		t.Fatalf("postern status: exit %d", code)
	}
	for _, want := range []string{"agent hub (" + p.hubPath, "TUNNELS (1)", "site-a", "TLS 1.3", "SERVICES (2)", "echo", "REFUSED HANDSHAKES (1)", "127.0.0.1", "http"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, out.String())
		}
	}

	checkMetrics(t, p)
	checkAccessLog(t, p, appAddr, msg)
}

func checkMetrics(t *testing.T, p *statusPair) {
	t.Helper()
	fams := testmetrics.Scrape(t, "http://"+p.hub.AdminAddr().String()+"/metrics")
	value := fams.Value
	const peer = "dns:site-a.test"
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"postern_peer_streams_total", map[string]string{"side": "service", "peer": peer, "service": "echo", "result": "ok"}, 1},
		{"postern_peer_streams_total", map[string]string{"side": "service", "peer": peer, "service": "cut", "result": "reset"}, 1},
		{"postern_peer_streams_total", map[string]string{"side": "service", "peer": peer, "service": "other", "result": "refused"}, 1},
		{"postern_peer_bytes_total", map[string]string{"side": "service", "peer": peer, "service": "echo", "direction": "sent"}, 12},
		{"postern_peer_bytes_total", map[string]string{"side": "service", "peer": peer, "service": "echo", "direction": "received"}, 12},
		{"postern_peer_streams_open", map[string]string{"side": "service", "peer": peer, "service": "echo"}, 0},
		{"postern_peer_tunnels_up", map[string]string{"peer": peer, "direction": "accepted"}, 1},
		{"postern_peer_tunnel_changes_total", map[string]string{"peer": peer, "event": "up"}, 1},
		{"postern_handshake_failures_total", map[string]string{"cause": "http"}, 1},
	} {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, c := range []struct {
		labels   map[string]string
		notAfter time.Time
	}{
		{map[string]string{"role": "peer", "peer": peer}, p.siteCert.Cert.NotAfter},
		{map[string]string{"role": "agent", "subject": `CN="hub"`}, time.Time{}},
		{map[string]string{"role": "ca", "subject": `CN="Test CA"`}, time.Time{}},
	} {
		got, ok := value("postern_certificate_expiry_seconds", c.labels)
		if !ok || got <= 0 {
			t.Errorf("postern_certificate_expiry_seconds%v = %v (present %v), want > 0", c.labels, got, ok)
		}
		if !c.notAfter.IsZero() && math.Abs(got-time.Until(c.notAfter).Seconds()) > 60 {
			t.Errorf("postern_certificate_expiry_seconds%v = %v, want about %v", c.labels, got, time.Until(c.notAfter).Seconds())
		}
	}
	// Every metric the packaged Grafana dashboard queries exists.
	dash, err := os.ReadFile(filepath.Join("..", "..", "packaging", "grafana", "postern-partners.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	queried := 0
	for _, p := range board.Panels {
		for _, target := range p.Targets {
			for _, name := range regexp.MustCompile(`postern_[a-z_]+`).FindAllString(target.Expr, -1) {
				queried++
				if fams[name] == nil {
					t.Errorf("dashboard panel %q queries %s, which /metrics lacks", p.Title, name)
				}
			}
		}
	}
	if queried < 8 {
		t.Errorf("dashboard queries %d metrics, want the per-partner ones", queried)
	}
	if t.Failed() {
		for name, f := range fams {
			if strings.HasPrefix(name, "postern_") {
				t.Logf("%s: %v", name, f.Metric)
			}
		}
	}
}

// checkAccessLog: each side wrote one line per relayed stream, with every
// field, as JSON fields.
func checkAccessLog(t *testing.T, p *statusPair, appAddr, msg string) {
	t.Helper()
	n := float64(len(msg))
	hubClosed := logLines(t, p.hubLog.String(), "stream closed")
	if len(hubClosed) != 1 {
		t.Fatalf("hub: %d stream closed lines, want 1:\n%s", len(hubClosed), p.hubLog.String())
	}
	for k, want := range map[string]any{
		"level": "INFO", "kind": "service", "outcome": "clean", "service": "echo", "source": appAddr,
		"target": p.echo.Addr().String(), "sent": n, "received": n,
	} {
		if got := hubClosed[0][k]; got != want {
			t.Errorf("hub's access line: %s = %v, want %v", k, got, want)
		}
	}
	for _, k := range []string{"peer", "peer_addr", "duration"} {
		if s, _ := hubClosed[0][k].(string); s == "" {
			t.Errorf("hub's access line lacks %s: %v", k, hubClosed[0])
		}
	}
	if !strings.Contains(hubClosed[0]["peer"].(string), "site-a") {
		t.Errorf("hub's access line: peer %v", hubClosed[0]["peer"])
	}

	siteClosed := logLines(t, p.siteLog.String(), "stream closed")
	if len(siteClosed) != 1 {
		t.Fatalf("site: %d stream closed lines, want 1:\n%s", len(siteClosed), p.siteLog.String())
	}
	for k, want := range map[string]any{
		"level": "INFO", "kind": "forward", "outcome": "clean", "service": "echo", "source": appAddr, "sent": n, "received": n,
	} {
		if got := siteClosed[0][k]; got != want {
			t.Errorf("site's access line: %s = %v, want %v", k, got, want)
		}
	}
	if s, _ := siteClosed[0]["peer"].(string); !strings.Contains(s, "hub") {
		t.Errorf("site's access line: peer %v", siteClosed[0]["peer"])
	}

	// The reset: the hub says the target cut it, the site says the peer did.
	hubReset := logLines(t, p.hubLog.String(), "stream reset")
	siteReset := logLines(t, p.siteLog.String(), "stream reset")
	if len(hubReset) != 1 || hubReset[0]["outcome"] != "reset" || hubReset[0]["reset_by"] != "target" || hubReset[0]["service"] != "cut" {
		t.Errorf("hub's reset lines: %v", hubReset)
	}
	if len(siteReset) != 1 || siteReset[0]["outcome"] != "reset" || siteReset[0]["reset_by"] != "peer" || siteReset[0]["service"] != "cut" {
		t.Errorf("site's reset lines: %v", siteReset)
	}
	// The refusal: one warning on each side, saying why.
	if r := logLines(t, p.hubLog.String(), "stream refused"); len(r) != 1 || r[0]["reason"] != "no such service here" || r[0]["level"] != "WARN" {
		t.Errorf("hub's refusal lines: %v", r)
	}
	if r := logLines(t, p.siteLog.String(), "stream refused by peer"); len(r) != 1 || !strings.Contains(fmt.Sprint(r[0]["reason"]), "unknown service") {
		t.Errorf("site's refusal lines: %v", r)
	}
}

// TestReloadCommand: `postern reload` makes the running agent read its
// certificate files again and prints what changed; over the control socket
// without an [admin] endpoint, and over the endpoint too.
func TestReloadCommand(t *testing.T) {
	p := newStatusPair(t)
	reload := func(path string) (int, string) {
		var out, errOut bytes.Buffer
		code := cmdReload([]string{"-c", path}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	srv := "server " + p.hub.ServerAddrs()[0].String()
	code, out := reload(p.hubPath)
	if code != 0 || !strings.Contains(out, "agent hub (socket ") || !strings.Contains(out, srv+": certificate files unchanged") {
		t.Fatalf("reload with nothing changed: exit %d\n%s", code, out)
	}
	next := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	testca.WriteFile(t, p.hubFiles.Cert, next.CertPEM)
	testca.WriteFile(t, p.hubFiles.Key, next.KeyPEM)
	code, out = reload(p.hubPath)
	if code != 0 || !strings.Contains(out, srv+": reloaded cert CN=\"hub\" serial "+next.Cert.SerialNumber.Text(16)) {
		t.Fatalf("reload after a new certificate: exit %d\n%s", code, out)
	}
	p.hubLog.WaitFor(t, 5*time.Second, `"msg":"reloaded certificate material"`, next.Cert.SerialNumber.Text(16))

	// A key that does not match: nothing changes, and the command fails saying why.
	other := p.ca.Issue(t, testca.Options{CN: "hub"})
	testca.WriteFile(t, p.hubFiles.Key, other.KeyPEM)
	code, out = reload(p.hubPath)
	if code != 1 || !strings.Contains(out, srv+": kept the material loaded before") {
		t.Fatalf("reload with a mismatched key: exit %d\n%s", code, out)
	}

	if runtime.GOOS != "windows" {
		sock := p.hub.ControlAddr()
		fi, err := os.Stat(sock)
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
			t.Errorf("control socket %s: %v, %v; want a socket with mode 0660", sock, fi.Mode(), err)
		}
		if places := agent.ControlSocketPaths(p.hubPath); !slices.Contains(places, sock) || places[len(places)-1] != filepath.Join(p.dir, "hub.control.sock") {
			t.Errorf("control socket at %s, want one of %v, the last beside the config", sock, places)
		}
	}

	// The site has no [admin]: its socket answers.
	if code, out := reload(p.sitePath); code != 0 || !strings.Contains(out, `client "hub": certificate files unchanged`) {
		t.Fatalf("site reload: exit %d\n%s", code, out)
	}

	// Over the admin endpoint: POST /reload from loopback.
	resp, err := http.Post("http://"+p.hub.AdminAddr().String()+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res agent.ReloadResponse
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || res.OK || !strings.Contains(res.Result, "kept the material loaded before") {
		t.Fatalf("POST /reload: %s %+v", resp.Status, res)
	}
}

// TestStatusNoAgent: with no agent running, the command says which
// socket it tried and what to do.
func TestStatusNoAgent(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	f := ca.Issue(t, testca.Options{CN: "idle"}).Write(t, dir, "idle", ca)
	path := writeTOML(t, dir, fmt.Sprintf("[tls]\ncert = %q\nkey = %q\nca = %q\n[[server]]\nlisten = \"127.0.0.1:0\"\n", f.Cert, f.Key, f.CA))
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"-c", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"socket " + filepath.Join(dir, "postern.control.sock") + ": connect: no such file or directory", "no [admin] listen", "is the agent running with this config?"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("message lacks %q: %s", want, errOut.String())
		}
	}
}

// TestTargetCell: the TARGET column shows the target used and, with
// several, how many are up; a lone target marked down says so.
func TestTargetCell(t *testing.T) {
	for _, tc := range []struct {
		s    agent.ServiceStatus
		want string
	}{
		{agent.ServiceStatus{Target: "a:1", Targets: []agent.TargetStatus{{Addr: "a:1", Up: true}}}, "a:1"},
		{agent.ServiceStatus{Target: "a:1", Targets: []agent.TargetStatus{{Addr: "a:1"}}}, "a:1 (down)"},
		{agent.ServiceStatus{Target: "b:1", Targets: []agent.TargetStatus{{Addr: "a:1"}, {Addr: "b:1", Up: true}}}, "b:1 (1 of 2 up)"},
		{agent.ServiceStatus{Target: "a:1"}, "a:1"}, // an older agent's status
	} {
		if got := targetCell(tc.s); got != tc.want {
			t.Errorf("targetCell(%+v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}
