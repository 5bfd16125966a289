package agent

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestReverseForwardFailsFast: once the peer of a reverse forward has been
// gone for longer than tunnel_wait, connections are reset at once with the
// reason instead of each waiting tunnel_wait; a peer that has just left is
// waited for, and once it is back connections work.
func TestReverseForwardFailsFast(t *testing.T) {
	const wait = 2 * time.Second
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, `[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "dns:site-a.test"
tunnel_wait = "2s"
`))
	fwd := hub.ForwardAddrs()[0]
	reset := func(what string, waits bool) {
		t.Helper()
		begin := time.Now()
		_, err := echoOnce(t, fwd, what)
		took := time.Since(begin)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v, want connection reset", what, err)
		}
		if waits && took < wait-100*time.Millisecond {
			t.Fatalf("%s: reset after %v, want it to wait tunnel_wait (%v)", what, took, wait)
		}
		if !waits && took > wait/2 {
			t.Fatalf("%s: reset after %v, want at once (well before tunnel_wait, %v)", what, took, wait)
		}
	}

	// Just started: the first connection waits for a peer.
	reset("first", true)
	hub.log.WaitFor(t, 5*time.Second, "no connected peer matches dns:site-a.test")
	// Absent for longer than tunnel_wait now: reset at once, saying why.
	reset("second", false)
	reset("third", false)
	hub.log.WaitFor(t, 5*time.Second, "connection reset", "peer dns:site-a.test not connected for", "(tunnel_wait 2s)")

	// The peer connects: connections work.
	site := start(t, dir, "site", reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:hub.test"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	waitPeer(t, hub, "dns:site-a.test")
	if got, err := echoOnce(t, fwd, "back"); err != nil || got != "back" {
		t.Fatalf("peer connected: %q, %v", got, err)
	}

	// It leaves: for tunnel_wait connections wait for it, then are reset
	// at once again.
	site.stop(t)
	hub.log.WaitFor(t, 5*time.Second, "tunnel closed", "peer_addr=")
	reset("just gone", true)
	reset("long gone", false)

	site2 := start(t, dir, "site2", reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:hub.test"))
	site2.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	waitPeer(t, hub, "dns:site-a.test")
	if got, err := echoOnce(t, fwd, "back again"); err != nil || got != "back again" {
		t.Fatalf("peer reconnected: %q, %v", got, err)
	}
}

// waitPeer waits until a has accepted a tunnel whose peer matches via:
// until then, a reverse forward whose peer has been gone long resets
// connections at once, even while the peer's own log says it connected.
func waitPeer(t *testing.T, a *running, via string) {
	t.Helper()
	pattern, err := identity.Parse(via)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		up := false
		for tn := range a.tunnels {
			up = up || pattern.MatchVerified(tn.Chains)
		}
		ch := a.tunnelsChanged.Wait()
		a.mu.Unlock()
		if up {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no tunnel of a peer matching %s accepted within 10s", via)
		}
	}
}
