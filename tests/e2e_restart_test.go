//go:build unix

package tests

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2ERestart: the hub is killed (SIGKILL) during a transfer: the app's
// connection is reset, not closed cleanly. The hub is started again on the
// same port; a new connection through the site's forward works within 2s
// of the new hub logging that it listens (the site's backoff_max is 500ms).
func TestE2ERestart(t *testing.T) {
	e2eBinary(t)
	target := e2eServe(t, func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		testnet.Echo(c)
	})
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	service := e2eServiceTOML("echo", target, "cn:site-a")
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0", service)))
	hubAddr := hub.serverAddr(t)
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, "5s", "echo")))
	forward := site.forwardAddr(t, "echo")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	// A transfer in flight: greeted, one round trip done, more to come.
	app := testnet.Dial(t, forward)
	app.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	if _, err := io.ReadFull(app, buf[:5]); err != nil || string(buf[:5]) != "hello" {
		t.Fatalf("greeting: %q, %v", buf[:5], err)
	}
	app.Write([]byte("ping"))
	if _, err := io.ReadFull(app, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("echo: %q, %v", buf[:4], err)
	}

	hub.signal(t, syscall.SIGKILL)
	if code := hub.waitExit(t, 5*time.Second); code != -1 {
		t.Fatalf("hub exited with %d, want killed by SIGKILL", code)
	}
	if err := testnet.Drain(app); !e2eIsReset(err) {
		t.Fatalf("the app's read ended with %v when the hub died, want connection reset", err)
	}
	site.log.WaitFor(t, 5*time.Second, "tunnel lost; reconnecting", "tunnel=hub")

	// The hub comes back on the same address.
	hub2 := e2eStartAgent(t, "hub2", e2eWriteConfig(t, dir, "hub2", e2eHubTOML(certs, hubAddr, service)))
	hub2.log.WaitFor(t, 10*time.Second, "tunnel server listening", "listen="+hubAddr)
	back := time.Now()
	deadline := back.Add(2 * time.Second)
	for attempt := 1; ; attempt++ {
		err := e2eGreeted(forward, deadline)
		if err == nil {
			t.Logf("a connection through the forward worked %s after the new hub listened (attempt %d)", time.Since(back).Round(time.Millisecond), attempt)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working connection through the forward within 2s of the hub's return (attempt %d: %v)", attempt, err)
		}
		time.Sleep(20 * time.Millisecond) // pace the retries; not a synchronisation
	}
	hub2.log.WaitFor(t, 5*time.Second, "tunnel accepted", "peer_addr=", "site-a")
	site.log.WaitFor(t, 5*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	// And a whole exchange works again.
	c := testnet.Dial(t, forward)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("again"))
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "helloagain" {
		t.Fatalf("after the restart: %q, %v; want %q and a clean end", got, err, "helloagain")
	}
}

// e2eGreeted connects to addr and waits until deadline for the service's
// "hello".
func e2eGreeted(addr string, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "hello" {
		return fmt.Errorf("greeting %q, want %q", buf, "hello")
	}
	return nil
}
