package agent

import (
	"net"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testmetrics"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestPeerLabelsFollowReload: the bounded peer and service labels are the
// running config's. A reload that names a partner in an allow list gives
// its streams that label (on the tunnel it already holds), a service a
// reload adds is counted under its own name, and once the reload removes
// them again the partner falls back to the wider "*" entry.
func TestPeerLabelsFollowReload(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	echo := ln.Addr().String()
	admin := "[admin]\nlisten = \"127.0.0.1:0\"\n"
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("open", echo, "*")+admin))
	hubAddr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, hubAddr, "open"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	metrics := "http://" + hub.AdminAddr().String() + "/metrics"
	const partner = "dns:site-a.test"
	streams := func(peer, service string) map[string]string {
		return map[string]string{"side": "service", "peer": peer, "service": service, "result": "ok"}
	}

	echoThrough(t, forwardTo(t, site, "open"))
	waitMetric(t, metrics, "postern_peer_streams_total", streams("*", "open"), 1)

	// Name the partner in a new service's allow list, and forward to it.
	rewrite(t, hub, hubTOML(p, serviceTOML("open", echo, "*")+serviceTOML("named", echo, partner)+admin))
	if rep, err := hub.ReloadReport(); err != nil {
		t.Fatalf("hub reload: %v\n%s", err, rep)
	}
	rewrite(t, site, siteTOML(p, hubAddr, "open", "named"))
	if rep, err := site.ReloadReport(); err != nil {
		t.Fatalf("site reload: %v\n%s", err, rep)
	}
	echoThrough(t, forwardTo(t, site, "open"))
	echoThrough(t, forwardTo(t, site, "named"))
	waitMetric(t, metrics, "postern_peer_streams_total", streams(partner, "open"), 1)
	waitMetric(t, metrics, "postern_peer_streams_total", streams(partner, "named"), 1)

	// Remove it again: the partner is "*" once more.
	rewrite(t, hub, hubTOML(p, serviceTOML("open", echo, "*")+admin))
	if rep, err := hub.ReloadReport(); err != nil {
		t.Fatalf("hub reload: %v\n%s", err, rep)
	}
	echoThrough(t, forwardTo(t, site, "open"))
	waitMetric(t, metrics, "postern_peer_streams_total", streams("*", "open"), 2)
	if got := hub.serviceLabel("named"); got != otherLabel {
		t.Errorf("service label of a service the reload removed: %q, want %q", got, otherLabel)
	}
}

// echoThrough sends a line through addr and checks the echo.
func echoThrough(t *testing.T, addr string) {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := echoOnce(t, a, "label me"); err != nil || got != "label me" {
		t.Fatalf("round trip through %s: %q, %v", addr, got, err)
	}
}

// waitMetric scrapes url until the sample of name with (at least) labels
// has value want, parsing the exposition with the Prometheus text parser.
func waitMetric(t *testing.T, url, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := scrapeValue(t, url, name, labels)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present: %v), want %v", name, labels, got, ok, want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

func scrapeValue(t *testing.T, url, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	return testmetrics.Scrape(t, url).Value(name, labels)
}
