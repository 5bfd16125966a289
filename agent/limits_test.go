package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// limitSites runs a hub offering services (each allowing site-a and
// site-b) and two sites with distinct identities, each forwarding every
// name in forwards; it waits for both tunnels.
func limitSites(t *testing.T, services string, forwards ...string) (hub, a, b *running) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub = start(t, dir, "hub", hubTOML(p, services))
	pb := *p
	pb.site = p.ca.Issue(t, testca.Options{CN: "site-b", DNS: []string{"site-b.test"}}).Write(t, dir, "siteb", p.ca)
	addr := hub.ServerAddrs()[0].String()
	a = start(t, dir, "site", siteTOML(p, addr, forwards...))
	b = start(t, dir, "siteb", siteTOML(&pb, addr, forwards...))
	a.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	b.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	return hub, a, b
}

func limitedService(name, target, limits string) string {
	return serviceTOML(name, target, "dns:site-a.test", "dns:site-b.test") + limits
}

// hold opens a connection through a forward to a twoPartService and
// reads its first part: the stream was admitted and stays open. It
// returns nil when the stream was refused (the connection was reset
// before the first part).
func hold(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil // reset before the dial saw its connection up
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, len("part one;"))
	if _, err := io.ReadFull(c, buf); err != nil {
		c.Close()
		// Nothing was written: the read is the only call that can take
		// the reset, so an end-of-stream here is a refusal that closed
		// instead of resetting.
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("refused stream: %v, want a reset", err)
		}
		return nil
	}
	c.SetReadDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLimitStreams: over max_streams_per_peer, max_streams,
// streams_per_second_per_peer and streams_per_second a stream is refused
// as overloaded, with a log line naming the limit and the peer; a peer
// under its own limits is not refused.
func TestLimitStreams(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	held := twoPartService(t, release)
	services := limitedService("perpeer", held, "max_streams_per_peer = 2\n") +
		limitedService("total", held, "max_streams = 2\n") +
		limitedService("rateperpeer", held, "streams_per_second_per_peer = 0.02\nstreams_burst = 2\n") +
		limitedService("rate", held, "streams_per_second = 0.02\nstreams_burst = 2\n")
	hub, a, b := limitSites(t, services, "perpeer", "total", "rateperpeer", "rate")
	fa, fb := a.ForwardAddrs(), b.ForwardAddrs()

	// Per peer: site-a's third stream is refused, site-b's first is not.
	for i := range 2 {
		if hold(t, fa[0]) == nil {
			t.Fatalf("perpeer: site-a's stream %d refused under max_streams_per_peer = 2", i+1)
		}
	}
	if hold(t, fa[0]) != nil {
		t.Fatal("perpeer: site-a's third stream admitted over max_streams_per_peer = 2")
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", "service=perpeer", `reason="max_streams_per_peer (2) reached for dns:site-a.test"`)
	if hold(t, fb[0]) == nil {
		t.Fatal("perpeer: site-b refused while only site-a is at its limit")
	}
	a.log.WaitFor(t, 5*time.Second, "stream refused by peer", "code=overloaded")

	// Service-wide: two streams of site-a fill it for site-b too.
	for range 2 {
		if hold(t, fa[1]) == nil {
			t.Fatal("total: stream refused under max_streams = 2")
		}
	}
	if hold(t, fb[1]) != nil {
		t.Fatal("total: site-b's stream admitted over max_streams = 2")
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", "service=total", `reason="max_streams (2) reached for service total"`)

	// New streams per second, per peer: a burst of 2, then one per 50s.
	for range 2 {
		if hold(t, fa[2]) == nil {
			t.Fatal("rateperpeer: stream refused within the burst")
		}
	}
	if hold(t, fa[2]) != nil {
		t.Fatal("rateperpeer: site-a's third stream admitted over streams_per_second_per_peer")
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", "service=rateperpeer", `reason="streams_per_second_per_peer (0.02) exceeded by dns:site-a.test"`)
	if hold(t, fb[2]) == nil {
		t.Fatal("rateperpeer: site-b refused while only site-a is over its rate")
	}

	// New streams per second, service-wide.
	if hold(t, fa[3]) == nil || hold(t, fb[3]) == nil {
		t.Fatal("rate: stream refused within the burst")
	}
	if hold(t, fb[3]) != nil {
		t.Fatal("rate: third stream admitted over streams_per_second")
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", "service=rate", `reason="streams_per_second (0.02) exceeded for service rate"`)
}

// TestLimitStreamsReleased: a stream that ends frees its place under
// max_streams_per_peer.
func TestLimitStreamsReleased(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub, a, _ := limitSites(t, limitedService("echo", ln.Addr().String(), "max_streams_per_peer = 1\n"), "echo")
	fwd := a.ForwardAddrs()[0]
	for i := range 3 {
		if got, err := echoOnce(t, fwd, "one at a time"); err != nil || got != "one at a time" {
			t.Fatalf("stream %d, after the previous ended: %q, %v", i+1, got, err)
		}
		// Its place is given back before this line. Site-a's streams on
		// its one tunnel are numbered 1, 3, 5...
		hub.log.WaitFor(t, 5*time.Second, "stream closed", fmt.Sprintf("stream=%d ", 2*i+1), "dns:site-a.test", "service=echo")
	}
	if n := countLines(hub.log.String(), "stream refused"); n != 0 {
		t.Errorf("%d streams refused, want none: each ended before the next", n)
	}
}

// sizedService sends size bytes to each connection (download), or, when
// the client sends first, counts what it sent and answers with the count
// (upload): "d" or "u" chooses.
func sizedService(t *testing.T, size int) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		var mode [1]byte
		if _, err := io.ReadFull(c, mode[:]); err != nil {
			return
		}
		if mode[0] == 'd' {
			c.Write(bytes.Repeat([]byte("d"), size))
			c.CloseWrite()
			io.Copy(io.Discard, c)
			return
		}
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprint(c, n)
		c.CloseWrite()
	})
	return ln.Addr().String()
}

// transfer moves size bytes through a forward (download or upload) and
// returns how long it took, from the first byte sent to the last byte
// (or the count) received.
func transfer(addr net.Addr, download bool, size int) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	begin := time.Now()
	if download {
		c.Write([]byte("d"))
		n, err := io.Copy(io.Discard, c)
		if err == nil && n != int64(size) {
			err = fmt.Errorf("downloaded %d bytes, want %d", n, size)
		}
		return time.Since(begin), err
	}
	if _, err := c.Write(append([]byte("u"), bytes.Repeat([]byte("u"), size)...)); err != nil {
		return 0, err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err == nil && string(got) != strconv.Itoa(size) {
		err = fmt.Errorf("uploaded %s bytes, want %d", got, size)
	}
	return time.Since(begin), err
}

// both runs a transfer through each of two forwards at once.
func both(t *testing.T, fa, fb net.Addr, download bool, size int) (da, db time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	var ea, eb error
	wg.Go(func() { da, ea = transfer(fa, download, size) })
	wg.Go(func() { db, eb = transfer(fb, download, size) })
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatalf("transfers: site-a %v, site-b %v", ea, eb)
	}
	return da, db
}

// TestLimitBandwidth: over bandwidth_per_peer a peer's streams are paced,
// each way, and another peer keeps its own rate; over bandwidth the
// service's streams share it. A transfer of 512 KiB at 256 KiB/s cannot
// end in less than ~1.94 s (the pacer lets 16 KiB through at once): it is
// held to ≥ 1.8 s, the rate limit with 10% slack. The amounts are small so
// that the transfers' own cost, on a loaded machine, stays well below the
// difference between two peers at their own rate (~2 s) and sharing one
// (≥ 3.9 s).
func TestLimitBandwidth(t *testing.T) {
	const size = 512 << 10
	const paced = 1800 * time.Millisecond
	_, a, b := limitSites(t, limitedService("perpeer", sizedService(t, size), "bandwidth_per_peer = \"256KiB\"\n")+
		limitedService("total", sizedService(t, size/2), "bandwidth = \"256KiB\"\n"), "perpeer", "total")
	fa, fb := a.ForwardAddrs(), b.ForwardAddrs()

	for _, download := range []bool{true, false} {
		da, db := both(t, fa[0], fb[0], download, size)
		t.Logf("bandwidth_per_peer 256KiB/s, download %v: site-a %v, site-b %v (512 KiB each, at once)", download, da, db)
		if da < paced || db < paced {
			t.Errorf("download %v: 512 KiB at 256 KiB/s per peer took %v and %v, want ≥ %v each", download, da, db, paced)
		}
		// Sharing one limit, the last would end after ≥ 3.9 s.
		if max(da, db) > 3300*time.Millisecond {
			t.Errorf("download %v: %v and %v: the peers' rates are not their own", download, da, db)
		}
	}

	da, db := both(t, fa[1], fb[1], true, size/2)
	t.Logf("bandwidth 256KiB/s for the service: site-a %v, site-b %v (256 KiB each, at once)", da, db)
	if max(da, db) < paced {
		t.Errorf("512 KiB in all at 256 KiB/s for the service took %v, want ≥ %v", max(da, db), paced)
	}
}

// TestLimitStreamsRaw: on a mux = false server, max_streams_per_peer
// refuses a peer's connection over it (a TCP reset, and the log line
// naming the limit); one of its connections ending frees the place.
func TestLimitStreamsRaw(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	release := make(chan struct{})
	defer close(release)
	target := twoPartService(t, release)
	hub := start(t, dir, "hub", rawHubTOML(p, "held", limitedService("held", target, "max_streams_per_peer = 1\n")))
	dial := func() (*tls.Conn, error) {
		c, err := tls.Dial("tcp", hub.ServerAddrs()[0].String(), rawPeerClientTLS(t, p))
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(testWaitRaw))
		buf := make([]byte, len("part one;"))
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	first, err := dial()
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("second connection admitted over max_streams_per_peer = 1")
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("second connection: %v, want it refused with a reset", err)
	}
	hub.log.WaitFor(t, 5*time.Second, "raw TLS connection refused", `reason="max_streams_per_peer (1) reached for dns:site-a.test"`)
	first.NetConn().(*net.TCPConn).SetLinger(0) // a reset: the target holds its side open
	first.NetConn().Close()
	hub.log.WaitFor(t, 5*time.Second, "raw TLS connection reset") // its place is given back before this line
	c, err := dial()
	if err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
	c.Close()
}

func TestLimitKey(t *testing.T) {
	ca := testca.New(t, "Key CA")
	leaf := ca.Issue(t, testca.Options{CN: "site-c", DNS: []string{"Site-C.test"}}).Cert
	cnOnly := ca.Issue(t, testca.Options{CN: "site-d"}).Cert
	for _, tt := range []struct {
		label string
		leaf  *x509.Certificate
		want  string
	}{
		{"dns:site-a.test", leaf, "dns:site-a.test"}, // an exact allow entry or client name: as labelled
		{"hub", leaf, "hub"},
		{"dns:*.test", leaf, "dns:site-c.test"}, // a wildcard: the peer's own name
		{"*", leaf, "dns:site-c.test"},
		{otherLabel, cnOnly, "cn:site-d"},
		{"*", nil, "*"},
	} {
		if got := limitKey(tt.label, tt.leaf); got != tt.want {
			t.Errorf("limitKey(%q) = %q, want %q", tt.label, got, tt.want)
		}
	}
}

// TestLimitsAdmit: a stream refused by one limit takes nothing from the
// others, and a released stream frees its place once only.
func TestLimitsAdmit(t *testing.T) {
	l := newLimits(config.Service{Name: "s", MaxStreamsPerPeer: 2, StreamsPerSecondPerPeer: 0.001, StreamsPerSecond: 0.001, StreamsBurst: 2})
	rel1, _, why := l.admit("a")
	rel2, _, why2 := l.admit("a")
	if why != "" || why2 != "" {
		t.Fatalf("within the limits: %q, %q", why, why2)
	}
	if _, _, why := l.admit("b"); why != "streams_per_second (0.001) exceeded for service s" {
		t.Fatalf("over the service's rate: %q", why)
	}
	if got := l.peers["b"].starts.Tokens(); got < 1.99 {
		t.Errorf("b's own rate lost a stream to a refusal by the service's: %v tokens, want 2", got)
	}
	if _, _, why := l.admit("a"); why != "max_streams_per_peer (2) reached for a" {
		t.Fatalf("over max_streams_per_peer: %q", why)
	}
	rel1()
	rel1()
	if l.peers["a"].open != 1 || l.open != 1 {
		t.Errorf("after one release (twice): %d open for a, %d in all; want 1, 1", l.peers["a"].open, l.open)
	}
	rel2()
	if newLimits(config.Service{Name: "off", DialTimeout: config.Duration(time.Second)}) != nil {
		t.Error("a service without limits has limits")
	}
}
