package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// testHub is an in-process hub with its own key: it completes the TLS
// handshake and keeps a tunnel up per connection (the multiplexer answers
// the client's pings by itself).
type testHub struct {
	cfg *tls.Config
	mu  sync.Mutex
	up  bool
	ts  []*tunnel.Tunnel
}

func (h *testHub) serve(c net.Conn) {
	h.mu.Lock()
	up := h.up
	h.mu.Unlock()
	if !up {
		c.Close()
		return
	}
	tc := tls.Server(c, h.cfg)
	if tc.Handshake() != nil {
		c.Close()
		return
	}
	var cfg config.Config
	cfg.SetDefaults()
	t, err := tunnel.New(tc, false, tunnel.OptionsOf(cfg.Tunnel))
	if err != nil {
		c.Close()
		return
	}
	h.mu.Lock()
	h.ts = append(h.ts, t)
	h.mu.Unlock()
}

// setUp starts or stops the hub; stopping closes its tunnels.
func (h *testHub) setUp(up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up = up
	if !up {
		for _, t := range h.ts {
			t.Close()
		}
		h.ts = nil
	}
}

func (h *testHub) closeAll() { h.setUp(false) }

// TestAllHoldsEveryHubBehindOneAddress: behind one address that hands
// connections to three hubs in a skewed order (the first hub three times
// before the others get a turn), a client with strategy "all" and hubs = 3
// ends up with one tunnel to each hub, closing the tunnels to hubs it
// already holds. When one hub goes away, the tunnels to the other two stay
// as they were, and once it is back the client holds all three again.
func TestAllHoldsEveryHubBehindOneAddress(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	hubs := make([]*testHub, 3)
	keys := map[string]int{}
	for i := range hubs {
		c := ca.Issue(t, testca.Options{CN: fmt.Sprintf("hub-%d", i), DNS: []string{"hub.test"}})
		hubs[i] = &testHub{up: true, cfg: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key}},
			ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: roots,
			NextProtos: []string{wire.ALPN},
		}}
		defer hubs[i].closeAll()
		keys[HubKey(&tunnel.Tunnel{Peer: c.Cert})] = i
	}

	// The "load balancer": connection n goes to hub order[n % len(order)],
	// or to the next hub that is up.
	order := []int{0, 0, 0, 1, 0, 1, 2}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := order[n%len(order)]
			for range hubs {
				hubs[i].mu.Lock()
				up := hubs[i].up
				hubs[i].mu.Unlock()
				if up {
					break
				}
				i = (i + 1) % len(hubs)
			}
			go hubs[i].serve(c)
		}
	}()

	var cfg config.Config
	cfg.SetDefaults()
	m, err := trust.LoadMaterial(trust.Files{Cert: site.Cert, Key: site.Key, CA: site.CA, MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	c := &Client{Name: "pool", Servers: []string{ln.Addr().String()}, ServerName: "hub.test",
		Creds: trust.NewCredentials(m), Dial: d.DialContext, DialTimeout: 5 * time.Second,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Parallel: 1, Strategy: All, Hubs: 3,
		Options: tunnel.OptionsOf(cfg.Tunnel), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// held waits until the client's live tunnels reach exactly the hubs in
	// want, one tunnel each, and returns them by hub.
	held := func(want ...int) map[int]*tunnel.Tunnel {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := map[int]*tunnel.Tunnel{}
			dup := false
			for _, tun := range c.Tunnels() {
				if tun.Closed() {
					continue
				}
				i := keys[HubKey(tun)]
				dup = dup || got[i] != nil
				got[i] = tun
			}
			ok := !dup && len(got) == len(want) && c.HubsHeld() == len(want)
			for _, i := range want {
				ok = ok && got[i] != nil
			}
			if ok {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("tunnels to hubs %v (duplicates: %v, held %d), want one to each of %v", got, dup, c.HubsHeld(), want)
			}
			time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
		}
	}
	before := held(0, 1, 2)
	// Tunnel spreads new streams: three picks with a stream held open on
	// each land on three different hubs.
	seen := map[int]bool{}
	for range 3 {
		tun, err := c.Tunnel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := tun.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		seen[keys[HubKey(tun)]] = true
	}
	if len(seen) != 3 {
		t.Errorf("three streams went to hubs %v, want all three", seen)
	}

	hubs[1].setUp(false)
	after := held(0, 2)
	for _, i := range []int{0, 2} {
		if after[i] != before[i] {
			t.Errorf("the tunnel to hub %d was replaced when hub 1 went away", i)
		}
	}
	hubs[1].setUp(true)
	back := held(0, 1, 2)
	for _, i := range []int{0, 2} {
		if back[i] != before[i] {
			t.Errorf("the tunnel to hub %d was replaced when hub 1 came back", i)
		}
	}
}
