package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// answering is a service that writes name and then echoes.
func answering(t testing.TB, name string) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte(name + ";"))
		testnet.Echo(c)
	})
	return ln.Addr().String()
}

// forwardTo is the address of a's forward to service (the first listed).
func forwardTo(t *testing.T, a *running, service string) string {
	t.Helper()
	for _, f := range a.Status().Forwards {
		if f.Service == service {
			return f.Listen
		}
	}
	t.Fatalf("no forward to service %q", service)
	return ""
}

// echoBack sends msg on c and expects it back within 10s.
func echoBack(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("got %q, want %q", got, msg)
	}
	return nil
}

// openAnswer dials addr and reads the service's name line.
func openAnswer(t *testing.T, addr, want string) net.Conn {
	t.Helper()
	c := testnet.Dial(t, addr)
	if err := roundTripPrefix(c, want+";"); err != nil {
		t.Fatalf("through %s: %v", addr, err)
	}
	return c
}

func roundTripPrefix(c net.Conn, want string) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

// longTransfer streams bytes through addr to an echo service until stop
// is closed, then checks that the SHA-256 of what came back equals that
// of what was sent. The result arrives on the returned channel.
func longTransfer(t *testing.T, addr string, stop <-chan struct{}) <-chan error {
	c := testnet.Dial(t, addr)
	res := make(chan error, 1)
	got := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		_, err := io.Copy(h, c)
		if err != nil {
			got <- []byte("read: " + err.Error())
			return
		}
		got <- h.Sum(nil)
	}()
	go func() {
		sent := sha256.New()
		chunk := make([]byte, 32<<10)
		const least = 256 // 8 MiB, however fast the reloads go
		for i := 0; ; i++ {
			select {
			case <-stop:
				if i < least {
					break
				}
				c.CloseWrite()
				sum := <-got
				if !bytes.Equal(sum, sent.Sum(nil)) {
					res <- fmt.Errorf("transfer of %d chunks: sha-256 of the echo %x (%s) differs from what was sent", i, sum, sum)
				} else {
					t.Logf("long transfer: %d KiB each way, sha-256 matches", i*32)
					res <- nil
				}
				return
			default:
			}
			for j := range chunk {
				chunk[j] = byte(i + j*7)
			}
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				res <- fmt.Errorf("transfer write after %d chunks: %w", i, err)
				return
			}
			sent.Write(chunk)
		}
	}()
	return res
}

func rewrite(t testing.TB, a *running, toml string) {
	t.Helper()
	testca.WriteFile(t, a.cfg.Path, []byte(toml))
}

// TestReloadConfigLive: services and forwards change on reload while a
// long transfer on an unrelated service runs across every reload with its
// bytes intact; a partner removed from allow loses its live stream, the
// others keep theirs; a config that does not load changes nothing.
func TestReloadConfigLive(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	siteB := p.ca.Issue(t, testca.Options{CN: "site-b", DNS: []string{"site-b.test"}}).Write(t, dir, "siteb", p.ca)
	bulk := testnet.Listen(t)
	testnet.Serve(t, bulk, testnet.Echo)
	shared := answering(t, "shared")
	targetA, targetB := answering(t, "A"), answering(t, "B")

	hubServices := func(sharedAllow, tgt string) string {
		return serviceTOML("bulk", bulk.Addr().String(), "*") +
			"[[service]]\nname = \"shared\"\ntarget = \"" + shared + "\"\nallow = [" + sharedAllow + "]\n" +
			serviceTOML("tgt", tgt, "*") + serviceTOML("extra", targetA, "*")
	}
	hubCfg := func(sharedAllow, tgt string) string { return hubTOML(p, hubServices(sharedAllow, tgt)) }
	hub := start(t, dir, "hub", hubCfg(`"dns:site-a.test"`, targetA))
	hubAddr := hub.ServerAddrs()[0].String()
	siteCfg := func(services ...string) string { return siteTOML(p, hubAddr, services...) }
	site := start(t, dir, "site", siteCfg("bulk", "shared", "tgt", "extra"))
	pb := *p
	pb.site = siteB
	siteBAgent := start(t, dir, "siteb", strings.Replace(siteTOML(&pb, hubAddr, "shared"), `name = "site-a"`, `name = "site-b"`, 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	siteBAgent.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	stop := make(chan struct{})
	transfer := longTransfer(t, forwardTo(t, site, "bulk"), stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()

	// Site: add a forward (to tgt) and remove one ("extra" has a live
	// connection, which keeps working).
	extraAddr := forwardTo(t, site, "extra")
	extraLive := openAnswer(t, extraAddr, "A")
	tgtLive := openAnswer(t, forwardTo(t, site, "tgt"), "A")
	rewrite(t, site, siteCfg("bulk", "shared", "tgt", "tgt"))
	rep, err := site.ReloadReport()
	if err != nil {
		t.Fatalf("site reload: %v\n%s", err, rep)
	}
	for _, want := range []string{`forward 127.0.0.1:0: removed (service "extra" via "hub")`, `forward 127.0.0.1:0: added (service "tgt" via "hub")`} {
		if !strings.Contains(rep, want) {
			t.Errorf("site reload result lacks %q:\n%s", want, rep)
		}
	}
	if strings.Contains(rep, "restart needed") {
		t.Errorf("site reload asks for a restart:\n%s", rep)
	}
	var tgtAddrs []string
	for _, f := range site.Status().Forwards {
		if f.Service == "tgt" {
			tgtAddrs = append(tgtAddrs, f.Listen)
		}
		if f.Service == "extra" {
			t.Errorf("forward to extra still listed after reload: %+v", f)
		}
	}
	if len(tgtAddrs) != 2 {
		t.Fatalf("forwards to tgt after reload: %v, want 2", tgtAddrs)
	}
	openAnswer(t, tgtAddrs[1], "A").Close()
	if c, err := net.DialTimeout("tcp", extraAddr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("removed forward %s still accepts connections", extraAddr)
	}
	if err := echoBack(tgtLive, "still here"); err != nil {
		t.Errorf("live stream on a kept forward after the site reload: %v", err)
	}
	if err := echoBack(extraLive, "drains normally"); err != nil {
		t.Errorf("live stream of the removed forward: %v", err)
	}
	extraLive.(*net.TCPConn).CloseWrite()
	extraLive.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(extraLive); err != io.EOF {
		t.Errorf("live stream of the removed forward ended with %v, want a clean end", err)
	}

	// Hub: add site-b to shared's allow list.
	sharedB := siteBAgent.ForwardAddrs()[0].String()
	if err := testnet.DialWriteDrain(t, sharedB, nil, 10*time.Second); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("site-b before it was allowed: %v; want it refused (a reset)", err)
	}
	rewrite(t, hub, hubCfg(`"dns:site-a.test", "dns:site-b.test"`, targetA))
	if rep, err := hub.ReloadReport(); err != nil || !strings.Contains(rep, `service "shared": changed allow`) {
		t.Fatalf("hub reload (allow site-b): %v\n%s", err, rep)
	}
	liveB := openAnswer(t, sharedB, "shared")
	liveA := openAnswer(t, forwardTo(t, site, "shared"), "shared")

	// Hub: remove site-b again: its live stream is cut, site-a's is not.
	rewrite(t, hub, hubCfg(`"dns:site-a.test"`, targetA))
	if rep, err := hub.ReloadReport(); err != nil || !strings.Contains(rep, `service "shared": changed allow`) {
		t.Fatalf("hub reload (remove site-b): %v\n%s", err, rep)
	}
	hub.log.WaitFor(t, 10*time.Second, "stream cut: identity no longer allowed after reload", "service=shared", "site-b")
	liveB.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(liveB); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("site-b's stream after it was removed from allow: %v, want it cut (a reset)", err)
	}
	if err := echoBack(liveA, "site-a keeps its stream"); err != nil {
		t.Errorf("site-a's stream after site-b was removed: %v", err)
	}
	if n := countLines(hub.log.String(), "stream cut: identity no longer allowed after reload"); n != 1 {
		t.Errorf("%d streams cut, want 1 (site-b's)", n)
	}

	// Hub: change tgt's target: new streams reach B, the live one stays on A.
	rewrite(t, hub, hubCfg(`"dns:site-a.test"`, targetB))
	if rep, err := hub.ReloadReport(); err != nil || !strings.Contains(rep, `service "tgt": changed target`) {
		t.Fatalf("hub reload (target): %v\n%s", err, rep)
	}
	openAnswer(t, tgtAddrs[1], "B").Close()
	if err := echoBack(tgtLive, "still on A"); err != nil {
		t.Errorf("live stream to the old target after the target changed: %v", err)
	}

	// Hub: a config that does not load changes nothing.
	before := hub.snapshot()
	good := hubCfg(`"dns:site-a.test"`, targetB)
	rewrite(t, hub, good+"[[service]]\nname = \"broken\"\ntarget = \"127.0.0.1:1\"\nallow = [\"*\"]\nbogus_key = 1\n")
	rep, err = hub.ReloadReport()
	if err == nil {
		t.Fatalf("reload of an invalid config succeeded:\n%s", rep)
	}
	wantLine := fmt.Sprintf("%s:%d", filepath.Base(hub.cfg.Path), strings.Count(good, "\n")+5)
	if !strings.Contains(err.Error(), wantLine) || !strings.Contains(rep, "not applied, nothing changed") {
		t.Errorf("invalid reload: error %q, result %q; want %s and \"not applied, nothing changed\"", err, rep, wantLine)
	}
	if after := hub.snapshot(); len(after.Services) != len(before.Services) || hub.service("broken") != nil {
		t.Errorf("invalid reload changed the services: %d before, %d after", len(before.Services), len(after.Services))
	}
	openAnswer(t, tgtAddrs[1], "B").Close()

	close(stop)
	select {
	case err := <-transfer:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("long transfer did not finish")
	}
	if n := countLines(hub.log.String(), "service=bulk", "reset"); n != 0 {
		t.Errorf("%d reset lines for the bulk service", n)
	}
}

// TestReloadTime100: how long a reload takes that changes 100 services
// (hub) and replaces 100 forwards (site), logged for the docs.
func TestReloadTime100(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := answering(t, "x")
	services := func(allow string) string {
		var b strings.Builder
		for i := range 100 {
			b.WriteString(serviceTOML(fmt.Sprintf("svc%03d", i), target, allow))
		}
		return b.String()
	}
	hub := start(t, dir, "hub", hubTOML(p, services("*")))
	names := func(prefix string) []string {
		var out []string
		for i := range 100 {
			out = append(out, fmt.Sprintf("%s%03d", prefix, i))
		}
		return out
	}
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String(), names("svc")...))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	rewrite(t, hub, hubTOML(p, services("dns:site-a.test")))
	began := time.Now()
	rep, err := hub.ReloadReport()
	hubTook := time.Since(began)
	if err != nil || strings.Count(rep, "changed allow") != 100 {
		t.Fatalf("hub reload: %v\n%s", err, rep)
	}
	rewrite(t, site, siteTOML(p, hub.ServerAddrs()[0].String(), names("new")...))
	began = time.Now()
	rep, err = site.ReloadReport()
	siteTook := time.Since(began)
	if err != nil || strings.Count(rep, ": removed") != 100 || strings.Count(rep, ": added") != 100 {
		t.Fatalf("site reload: %v\n%s", err, rep)
	}
	if n := len(site.ForwardAddrs()); n != 100 {
		t.Fatalf("%d forwards after the reload, want 100", n)
	}
	// A new forward carries streams: the hub has no such service and says so.
	// (The refusal resets the connection, at times before the dial returns.)
	if c, err := net.DialTimeout("tcp", forwardTo(t, site, "new099"), 5*time.Second); err == nil {
		defer c.Close()
	}
	hub.log.WaitFor(t, 10*time.Second, "stream refused", "service=new099", "no such service here")
	// How long they take is measured by BenchmarkReload100, not asserted.
	t.Logf("reload time: 100 services changed: %v; 100 forwards closed and 100 opened: %v", hubTook, siteTook)
}

// TestReloadClients: a [[client]] added by a reload dials and carries its
// forward's streams; removed, its live stream runs to a clean end and
// then its tunnel closes; the transfer on the other client is untouched.
func TestReloadClients(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	bulk := testnet.Listen(t)
	testnet.Serve(t, bulk, testnet.Echo)
	other := answering(t, "other")
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("bulk", bulk.Addr().String(), "*")+serviceTOML("other", other, "*")))
	hubAddr := hub.ServerAddrs()[0].String()
	base := siteTOML(p, hubAddr, "bulk")
	site := start(t, dir, "site", base)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	stop := make(chan struct{})
	transfer := longTransfer(t, forwardTo(t, site, "bulk"), stop)

	second := fmt.Sprintf("[[client]]\nname = \"hub2\"\nservers = [%q]\nserver_name = \"hub.test\"\nbackoff_min = \"50ms\"\n"+
		"[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = \"other\"\nvia = \"hub2\"\ntunnel_wait = \"5s\"\n", hubAddr)
	rewrite(t, site, base+second)
	rep, err := site.ReloadReport()
	if err != nil || !strings.Contains(rep, `client "hub2": added`) || !strings.Contains(rep, `forward 127.0.0.1:0: added (service "other" via "hub2")`) {
		t.Fatalf("reload adding a client: %v\n%s", err, rep)
	}
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub2")
	live := openAnswer(t, forwardTo(t, site, "other"), "other")
	otherAddr := forwardTo(t, site, "other")
	tunnels := func() int { return len(hub.Status().Tunnels) }
	if n := tunnels(); n != 2 {
		t.Fatalf("hub has %d tunnels, want 2", n)
	}

	rewrite(t, site, base)
	rep, err = site.ReloadReport()
	if err != nil || !strings.Contains(rep, `client "hub2": removed`) || !strings.Contains(rep, `forward 127.0.0.1:0: removed (service "other" via "hub2")`) {
		t.Fatalf("reload removing a client: %v\n%s", err, rep)
	}
	if c, err := net.DialTimeout("tcp", otherAddr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("forward via the removed client still accepts")
	}
	if err := echoBack(live, "the removed client's stream goes on"); err != nil {
		t.Fatalf("live stream via the removed client: %v", err)
	}
	live.(*net.TCPConn).CloseWrite()
	live.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(live); err != io.EOF {
		t.Errorf("live stream via the removed client ended with %v, want a clean end", err)
	}
	site.log.WaitFor(t, 10*time.Second, "removed client drained; closing its tunnels", "tunnel=hub2")
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for tunnels() != 1 {
		select {
		case <-deadline:
			t.Fatalf("hub has %d tunnels 10s after the client drained, want 1", tunnels())
		case <-tick.C:
		}
	}
	if clients, _ := site.clientMaps(); clients["hub2"] != nil || clients["hub"] == nil {
		t.Errorf("clients after the reload: %v", clients)
	}

	close(stop)
	select {
	case err := <-transfer:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("long transfer did not finish")
	}
}
