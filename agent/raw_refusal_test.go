package agent

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestRawRefusalReason: a mux = false [[client]] refused by a mux = false
// Postern [[server]] (TLS 1.3: the refusal arrives on the first read, in
// the middle of the relay) logs the hub's reason with the forwarded
// connection's end; the application sees a reset and the service nothing.
func TestRawRefusalReason(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := testnet.Listen(t)
	reached := make(chan struct{}, 1)
	testnet.Serve(t, target, func(*net.TCPConn) { reached <- struct{}{} })
	hub := start(t, dir, "hub", strings.Replace(rawHubTOML(p, "sink", serviceTOML("sink", target.Addr().String(), "dns:site-a.test")),
		"mux = false\n", "mux = false\npeer = [\"dns:partner-b.test\"]\n", 1))
	site := start(t, dir, "site", rawSiteTOML(p, hub.ServerAddrs()[0].String(), "sink"))

	if err := testnet.DialWriteDrain(t, site.ForwardAddrs()[0].String(), []byte("hello"), testWaitRaw); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the application's connection ended with %v, want a connection reset", err)
	}
	site.log.WaitFor(t, 10*time.Second, "raw TLS connection reset",
		`hub refused this agent's certificate: client certificate CN=\"site-a\" matches none of the identities the server accepts (peer; not shown to the client)`)
	hub.log.WaitFor(t, 10*time.Second, `msg="tunnel refused"`, "matches none of peer = [dns:partner-b.test]")
	if strings.Contains(site.log.String(), "partner-b") {
		t.Errorf("the site learned the hub's peer list:\n%s", site.log)
	}
	select {
	case <-reached:
		t.Error("a refused raw client reached the service's target")
	default:
	}
}
