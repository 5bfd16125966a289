package agent

import (
	"bytes"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// hostileTunnel dials the hub as the site (a valid certificate) and speaks
// the multiplexer and the open protocol directly, as an attacker would.
func hostileTunnel(t *testing.T, p *pki, addr string) *tunnel.Tunnel {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test",
		Certificates: []tls.Certificate{siteCert(t, p)}, NextProtos: []string{wire.ALPN}})
	if err != nil {
		t.Fatal(err)
	}
	opts := tunnel.Options{StreamWindow: 16 << 20, KeepaliveInterval: 10 * time.Second,
		KeepaliveTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxStreams: 1 << 20}
	tun, err := tunnel.New(c, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// stalledTarget accepts connections and never reads them.
func stalledTarget(t *testing.T) string {
	ln := testnet.Listen(t)
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// liveHeap is the process's live heap after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// An authenticated peer that is allowed nothing useful opens streams at
// full rate to an unknown service, a denied service and a target that
// never reads, and pushes data into all of them. What the hub buffers
// stays within max_buffered (docs/performance.md, "Memory bounds"), and
// its heap within that plus a fixed allowance, however much is pushed.
func TestHostilePeerCannotInflateMemory(t *testing.T) {
	const (
		maxBuffered = 32 << 20
		perStream   = 4 << 20
		streams     = 16 // per kind
		allowance   = 48 << 20
	)
	dir := t.TempDir()
	p := newPKI(t, dir)
	services := serviceTOML("denied", stalledTarget(t), "dns:nobody.test") +
		serviceTOML("stalled", stalledTarget(t), "dns:site-a.test")
	toml := strings.Replace(hubTOML(p, services), "[tunnel]\n",
		"[tunnel]\nmax_buffered = \"32MiB\"\nmax_tunnel_buffered = \"16MiB\"\n", 1)
	hub := start(t, dir, "hub", toml)
	tun := hostileTunnel(t, p, hub.ServerAddrs()[0].String())
	if err := tun.Confirm(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := liveHeap()

	payload := bytes.Repeat([]byte{'x'}, perStream)
	var wg sync.WaitGroup
	for _, svc := range []string{"unknown", "denied", "stalled"} {
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := tun.Open()
				if err != nil {
					return
				}
				defer st.Reset()
				req, _ := wire.AppendOpen(nil, wire.OpenRequest{Service: svc, Source: "10.0.0.1:1", Destination: "10.0.0.2:2"})
				st.SetWriteDeadline(time.Now().Add(5 * time.Second))
				st.Write(req) // no wait for the answer: push at once
				st.Write(payload)
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var peakHeap uint64
	var peakBuffered int64
	sample := func() {
		peakHeap = max(peakHeap, liveHeap())
		peakBuffered = max(peakBuffered, hub.tun.Buffer.Used())
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			sample()
		}
	}
	sample()
	grew := int64(peakHeap) - int64(base)
	t.Logf("pushed %d MiB; hub buffered at most %d MiB; live heap grew by at most %d MiB",
		3*streams*perStream>>20, peakBuffered>>20, grew>>20)
	if peakBuffered > maxBuffered {
		t.Errorf("hub buffered %d bytes, over max_buffered %d", peakBuffered, maxBuffered)
	}
	if grew > maxBuffered+allowance {
		t.Errorf("live heap grew by %d MiB, over max_buffered (%d MiB) + %d MiB", grew>>20, maxBuffered>>20, allowance>>20)
	}
}

// A peer certificate may hold max_tunnels_per_peer tunnels; the next one
// is closed at once.
func TestMaxTunnelsPerPeer(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	toml := strings.Replace(hubTOML(p, ""), "[tunnel]\n", "[tunnel]\nmax_tunnels_per_peer = 2\n", 1)
	hub := start(t, dir, "hub", toml)
	addr := hub.ServerAddrs()[0].String()
	for i := range 2 {
		if err := hostileTunnel(t, p, addr).Confirm(t.Context()); err != nil {
			t.Fatalf("tunnel %d: %v", i+1, err)
		}
	}
	third := hostileTunnel(t, p, addr)
	select {
	case <-third.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("third tunnel from the same peer still open after 30s; want it closed (max_tunnels_per_peer = 2)")
	}
	hub.log.WaitFor(t, 10*time.Second, "too many tunnels from this peer")
}
