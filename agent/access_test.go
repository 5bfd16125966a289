package agent

import (
	"io"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestPeerLabels: a dialed tunnel's label is its [[client]] name; an
// accepted one's is the first configured identity it matches, "*" last
// (so a catch-all service listed first does not hide which partner it
// is); a peer no entry names is "other". Service labels are configured
// names or "other".
func TestPeerLabels(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	services := serviceTOML("open", ln.Addr().String(), "*") +
		serviceTOML("partner", ln.Addr().String(), "cn:nobody", "dns:site-a.test")
	hub, site := startPair(t, services, "open")
	if got, err := echoOnce(t, site.ForwardAddrs()[0], "label me"); err != nil || got != "label me" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	var accepted, dialed string
	for _, ts := range hub.Status().Tunnels {
		accepted = ts.PeerLabel
	}
	for _, ts := range site.Status().Tunnels {
		dialed = ts.PeerLabel
	}
	if accepted != "dns:site-a.test" || dialed != "hub" {
		t.Errorf("labels: accepted %q, dialed %q; want dns:site-a.test and hub", accepted, dialed)
	}
	if got := hub.serviceLabel("partner"); got != "partner" {
		t.Errorf("service label of a configured service: %q", got)
	}
	if got := hub.serviceLabel("made-up-by-the-peer"); got != otherLabel {
		t.Errorf("service label of an unknown name: %q, want %q", got, otherLabel)
	}
	if got := hub.peerLabel("", nil); got != otherLabel {
		t.Errorf("label of a peer no entry names: %q, want %q", got, otherLabel)
	}

	// Once the tunnel is gone, its cached label is too.
	site.stop(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		hub.obs.labels.Range(func(any, any) bool { n++; return true })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnel labels still cached after the tunnel closed", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestAccessLineAddresses: the access lines name the connection's
// addresses (formatted when the line is written, not when the stream
// opens): on the site the forward, the client and the hub's address, on
// the hub the client as the site reported it and the site's address.
func TestAccessLineAddresses(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub, site := startPair(t, serviceTOML("echo", ln.Addr().String(), "*"), "echo")
	fwd := site.ForwardAddrs()[0].String()
	c := testnet.Dial(t, fwd)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("who am I")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if err := testnet.Drain(c); err != nil && err != io.EOF {
		t.Fatalf("round trip: %v", err)
	}
	client := c.LocalAddr().String()
	site.log.WaitFor(t, 5*time.Second, "stream closed", "forward="+fwd, "client="+client, "source="+client,
		"peer_addr="+hub.ServerAddrs()[0].String())
	var siteAddr string
	for _, tn := range hub.liveTunnels() {
		siteAddr = tn.RemoteAddr().String()
	}
	hub.log.WaitFor(t, 5*time.Second, "stream closed", "source="+client, "peer_addr="+siteAddr)
}
