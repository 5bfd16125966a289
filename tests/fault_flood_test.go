//go:build unix

package tests

import (
	"net"
	"testing"
	"time"
)

// faultFloodConns is how many silent TCP connections the flood holds open
// on the hub's tunnel port.
const faultFloodConns = 300

// TestFaultSilentFlood: 300 TCP connections that send nothing sit on the
// hub's tunnel port (from three other loopback addresses, as a few hosts
// would); a partner's tunnel must still come up within a few seconds and
// carry a transfer whole.
func TestFaultSilentFlood(t *testing.T) {
	t.Parallel()
	e2eBinary(t)
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	target := faultNewTarget(t)
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", faultConf("hub", certs.hub, "5s",
		"[[server]]\nlisten = \"127.0.0.1:0\"\n", e2eServiceTOML("data", target.Addr, "cn:site-a"))))
	hubAddr := hub.serverAddr(t)

	for i := range faultFloodConns {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%3))}
		d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", hubAddr)
		if err != nil {
			t.Fatalf("silent connection %d from %s: %v", i, src.IP, err)
		}
		t.Cleanup(func() { c.Close() })
	}

	start := time.Now()
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", faultConf("site-a", certs.site, "5s",
		faultClient(hubAddr), faultForward("data", "hub"))))
	forward := site.forwardAddr(t, "data")
	const within = 5 * time.Second
	site.log.WaitFor(t, within, "tunnel connected", "tunnel=hub", "addr="+hubAddr)
	t.Logf("the site's tunnel came up %s after it started, beside %d silent connections", time.Since(start).Round(time.Millisecond), faultFloodConns)
	if r := faultTransfer(forward, faultSpec{Up: 256 << 10, Down: 1 << 20, Timeout: 20 * time.Second}); r.Class != faultComplete {
		t.Fatalf("transfer beside the flood: %v; want complete", r)
	}
}
