package tests

// TestE2EPoolBehindHAProxy: three hubs behind HAProxy in TCP mode, and a
// site with strategy = "all" and hubs = 3 that knows only the load
// balancer's address. The site ends up with one tunnel to each hub, so its
// forwards spread over all three and every hub's reverse forward reaches
// the site. Killing one hub with SIGKILL resets only the streams that
// crossed it; the others carry on, new connections work, and once the hub
// is back the site holds a tunnel to it again.

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

const poolHubs = 3

// poolNeedHAProxy fails under CI=true and skips elsewhere when haproxy is
// not installed.
func poolNeedHAProxy(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("haproxy")
	if err != nil {
		msg := "needs haproxy (Debian package haproxy; .ci/run installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func TestE2EPoolBehindHAProxy(t *testing.T) {
	haproxy := poolNeedHAProxy(t)
	dir := t.TempDir()
	ca := testca.New(t, "E2E Pool CA")
	site := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "site", ca)

	// Each hub has its own key and certificate (that is how the site tells
	// them apart) and its own echo target, which first sends the hub's
	// number so a connection knows which hub carried it.
	var hits [poolHubs]atomic.Int64
	hubCfg := make([]string, poolHubs)
	hubs := make([]*e2eAgent, poolHubs)
	tunnelAddr := make([]string, poolHubs)
	reverseAddr := make([]string, poolHubs)
	for i := range poolHubs {
		files := ca.Issue(t, testca.Options{CN: fmt.Sprintf("hub-%d", i), DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}}).
			Write(t, dir, fmt.Sprintf("hub%d", i), ca)
		echo := e2eServe(t, func(c *net.TCPConn) {
			hits[i].Add(1)
			if _, err := c.Write([]byte{byte(i)}); err == nil {
				io.Copy(c, c)
			}
		})
		hubCfg[i] = poolHubTOML(files, "127.0.0.1:0", echo)
		hubs[i] = e2eStartAgent(t, fmt.Sprintf("hub%d", i), e2eWriteConfig(t, dir, fmt.Sprintf("hub%d", i), hubCfg[i]))
		tunnelAddr[i] = hubs[i].serverAddr(t)
		reverseAddr[i] = hubs[i].forwardAddr(t, "site-echo")
	}
	lbTunnels, lbApp := poolStartHAProxy(t, haproxy, dir, tunnelAddr, reverseAddr)

	siteEcho := e2eServe(t, func(c *net.TCPConn) { io.Copy(c, c) })
	siteTOML := fmt.Sprintf(`name = "site-a"
shutdown_timeout = "5s"

[tls]
cert = %q
key = %q
ca = %q

[[client]]
name = "pool"
servers = [%q]
server_name = "hub.test"
strategy = "all"
hubs = %d
backoff_min = "50ms"
backoff_max = "500ms"

[[forward]]
listen = "127.0.0.1:0"
service = "data"
via = "pool"
tunnel_wait = "5s"

%s`, site.Cert, site.Key, site.CA, lbTunnels, poolHubs, e2eServiceTOML("site-echo", siteEcho, "dns:hub.test"))
	siteAgent := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", siteTOML))
	fwd := siteAgent.forwardAddr(t, "data")
	siteAgent.log.WaitFor(t, 20*time.Second, "tunnels up to every hub", "tunnel=pool", "hubs=3")
	for i := range poolHubs {
		poolWaitHeld(t, hubs[i])
	}

	// Forward connections, held open together so least-loaded placement
	// spreads them: every hub carries some, and each round trip checks out.
	conns := poolOpen(t, fwd, 3*poolHubs)
	byHub := map[int][]net.Conn{}
	for _, pc := range conns {
		byHub[pc.hub] = append(byHub[pc.hub], pc.conn)
	}
	for i := range poolHubs {
		if len(byHub[i]) == 0 {
			t.Fatalf("no forward connection landed on hub %d (per hub: %v)", i, poolCounts(byHub))
		}
	}

	// Reverse connections: every hub's reverse forward reaches the site,
	// directly and through the load balancer's application port.
	var reverse [poolHubs]net.Conn
	for i := range poolHubs {
		c := poolDial(t, reverseAddr[i])
		if err := poolRoundTrip(c, 32<<10); err != nil {
			t.Fatalf("reverse forward on hub %d: %v", i, err)
		}
		reverse[i] = c
	}
	for n := range 2 * poolHubs {
		c := poolDial(t, lbApp)
		if err := poolRoundTrip(c, 32<<10); err != nil {
			t.Fatalf("reverse connection %d through the load balancer: %v", n, err)
		}
		c.Close()
	}

	// Kill one hub: its streams end with a reset, the others carry on.
	const victim = 1
	hubs[victim].cmd.Process.Kill()
	hubs[victim].waitExit(t, 10*time.Second)
	for _, c := range byHub[victim] {
		err := poolRoundTrip(c, 32<<10)
		if err == nil {
			t.Fatalf("a forward stream over the killed hub still works")
		}
		if !e2eIsReset(err) {
			t.Errorf("forward stream over the killed hub ended with %v, want a reset", err)
		}
	}
	for i := range poolHubs {
		if i == victim {
			continue
		}
		for _, c := range byHub[i] {
			if err := poolRoundTrip(c, 32<<10); err != nil {
				t.Fatalf("forward stream over hub %d, which was not killed: %v", i, err)
			}
		}
		if err := poolRoundTrip(reverse[i], 32<<10); err != nil {
			t.Fatalf("reverse stream over hub %d, which was not killed: %v", i, err)
		}
	}
	// New connections work and go to the hubs that are left.
	for _, pc := range poolOpen(t, fwd, 2*poolHubs) {
		if pc.hub == victim {
			t.Fatalf("a new forward connection landed on the killed hub")
		}
	}

	// The hub comes back on its address; the site takes a tunnel to it
	// again and new streams reach it.
	before := hits[victim].Load()
	hubs[victim] = e2eStartAgent(t, "hub-restarted", e2eWriteConfig(t, dir, "hub-restarted",
		strings.Replace(hubCfg[victim], `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", tunnelAddr[victim]), 1)))
	poolWaitHeld(t, hubs[victim])
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(siteAgent.log.String(), `msg="tunnels up to every hub"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the site did not get back to a tunnel to each of the %d hubs", poolHubs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
	for hits[victim].Load() == before {
		if time.Now().After(deadline) {
			t.Fatalf("no new forward connection reached hub %d after it came back", victim)
		}
		for _, pc := range poolOpen(t, fwd, poolHubs) {
			pc.conn.Close()
		}
	}
}

// poolHubTOML is a hub offering "data" (its echo target) to site-a, with a
// reverse forward to site-a's "site-echo".
func poolHubTOML(f testca.Files, listen, echo string) string {
	return fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"

[tls]
cert = %q
key = %q
ca = %q

[[server]]
listen = %q

%s
[[forward]]
listen = "127.0.0.1:0"
service = "site-echo"
via = "dns:site-a.test"
tunnel_wait = "5s"
`, f.Cert, f.Key, f.CA, listen, e2eServiceTOML("data", echo, "dns:site-a.test"))
}

// poolStartHAProxy runs haproxy in TCP mode with two frontends: one for
// the hubs' tunnel servers and one for their reverse forwards. The test
// listens on both addresses itself and hands the sockets to haproxy
// (bind fd@3, fd@4), so no port is chosen by opening and closing it.
func poolStartHAProxy(t *testing.T, haproxy, dir string, tunnels, reverse []string) (lbTunnels, lbApp string) {
	t.Helper()
	files := make([]*os.File, 2)
	addrs := make([]string, 2)
	for i := range files {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File() // a duplicate of the listening socket, for haproxy
		ln.Close()                             // haproxy's copy keeps the socket listening
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close() // haproxy has its own once started
		files[i], addrs[i] = f, ln.Addr().String()
	}
	conf := filepath.Join(dir, "haproxy.cfg")
	testca.WriteFile(t, conf, []byte(poolHAProxyConfig("fd@3", "fd@4", tunnels, reverse)))
	a := &e2eAgent{name: "haproxy", log: &testnet.LogBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(haproxy, "-f", conf, "-db")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.ExtraFiles = files // fd 3 and fd 4 in haproxy
	a.cmd.WaitDelay = 5 * time.Second
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	go func() {
		defer close(a.done)
		a.cmd.Wait()
	}()
	t.Cleanup(func() {
		if !a.exited() {
			a.cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("haproxy output:\n%s", a.log.String())
		}
	})
	return addrs[0], addrs[1]
}

func poolHAProxyConfig(lbTunnels, lbApp string, tunnels, reverse []string) string {
	var b strings.Builder
	b.WriteString(`global
    maxconn 1000

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch 1

frontend tunnels
    bind ` + lbTunnels + `
    default_backend hubs

backend hubs
    balance leastconn
`)
	for i, a := range tunnels {
		fmt.Fprintf(&b, "    server hub%d %s\n", i, a)
	}
	b.WriteString(`
frontend app
    bind ` + lbApp + `
    default_backend hub_forwards

backend hub_forwards
    balance roundrobin
`)
	for i, a := range reverse {
		fmt.Fprintf(&b, "    server hub%d %s\n", i, a)
	}
	return b.String()
}

type poolConn struct {
	conn net.Conn
	hub  int
}

// poolOpen opens n connections to the site's forward, reads the number of
// the hub whose target answered, and checks a round trip on each. The connections stay open until the test ends.
func poolOpen(t *testing.T, addr string, n int) []poolConn {
	t.Helper()
	out := make([]poolConn, n)
	for i := range out {
		// One at a time: a stream counts toward its tunnel's load once it
		// is open, which reading the hub's number proves.
		out[i].conn = poolDial(t, addr)
		var b [1]byte
		out[i].conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(out[i].conn, b[:]); err != nil {
			t.Fatalf("forward connection %d: read the hub's number: %v", i, err)
		}
		out[i].hub = int(b[0])
	}
	for i := range out {
		if err := poolRoundTrip(out[i].conn, 64<<10); err != nil {
			t.Fatalf("forward connection %d over hub %d: %v", i, out[i].hub, err)
		}
	}
	return out
}

func poolDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// poolRoundTrip sends size random bytes to an echo and checks that the
// same bytes (by SHA-256) come back.
func poolRoundTrip(c net.Conn, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(15 * time.Second))
	defer c.SetDeadline(time.Time{})
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		// A reset is reported once, to whichever of the read and the
		// write sees it first; the other sees EOF or EPIPE.
		return errors.Join(err, <-werr)
	}
	if err := <-werr; err != nil {
		return err
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return errors.New("the echoed bytes differ (SHA-256)")
	}
	return nil
}

// poolWaitHeld waits until the site holds a tunnel to hub: the hub has
// accepted more tunnels from site-a than it has seen close (the site closes
// a tunnel to a hub it already holds at once, so one "tunnel accepted"
// line is not enough).
func poolWaitHeld(t *testing.T, hub *e2eAgent) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var open int
		for line := range strings.SplitSeq(hub.log.String(), "\n") {
			switch {
			case !strings.Contains(line, "site-a"):
			case strings.Contains(line, `msg="tunnel accepted"`):
				open++
			case strings.Contains(line, `msg="tunnel closed"`):
				open--
			}
		}
		if open > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the site holds no tunnel to it after 20s", hub.name)
		}
		select {
		case <-hub.done:
			t.Fatalf("%s exited", hub.name)
		case <-time.After(20 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

func poolCounts(m map[int][]net.Conn) map[int]int {
	out := map[int]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}
