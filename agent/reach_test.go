package agent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// reverseHubTOML is a hub whose forward reaches the "echo" service offered
// by the connected peer site-a.
func reverseHubTOML(p *pki) string {
	return hubTOML(p, `[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "dns:site-a.test"
tunnel_wait = "1s"
`)
}

// reverseSiteTOML dials the hub and offers echo to whoever allow names.
func reverseSiteTOML(p *pki, hubAddr, target string, allow ...string) string {
	return siteTOML(p, hubAddr) + serviceTOML("echo", target, allow...)
}

func echoOnce(t *testing.T, addr net.Addr, msg string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// A reset that comes before the write (a refusal at once) is reported
	// to the write only, and the read after it sees end-of-stream.
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite() // after a reset: ENOTCONN, and the read still reports the reset
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestReverseForward: a connection to the hub's reverse forward reaches a
// service on the dialing side; it is reset with a clear log while the peer
// is not connected, and works again once it reconnects.
func TestReverseForward(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", reverseHubTOML(p))
	fwd := hub.ForwardAddrs()[0]

	// No peer yet: reset after tunnel_wait, and the log names the peer.
	if _, err := echoOnce(t, fwd, "anyone?"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("with no peer connected: %v, want connection reset", err)
	}
	hub.log.WaitFor(t, 5*time.Second, "no connected peer matches dns:site-a.test")

	site := start(t, dir, "site", reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:hub.test"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	waitPeer(t, hub, "dns:site-a.test") // a peer gone for long is not waited for
	if got, err := echoOnce(t, fwd, "through the reverse tunnel"); err != nil || got != "through the reverse tunnel" {
		t.Fatalf("reverse round trip: %q, %v", got, err)
	}

	// The site goes away and comes back.
	site.stop(t)
	hub.log.WaitFor(t, 5*time.Second, "tunnel closed", "peer_addr=")
	if _, err := echoOnce(t, fwd, "gone?"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the peer left: %v, want connection reset", err)
	}
	site2 := start(t, dir, "site2", reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:hub.test"))
	site2.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	waitPeer(t, hub, "dns:site-a.test") // a peer gone for long is not waited for
	if got, err := echoOnce(t, fwd, "back again"); err != nil || got != "back again" {
		t.Fatalf("after the peer reconnected: %q, %v", got, err)
	}
}

// TestReverseForwardDenied: the dialing side's own allow list decides.
func TestReverseForwardDenied(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", reverseHubTOML(p))
	site := start(t, dir, "site", reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:someone-else.test"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if _, err := echoOnce(t, hub.ForwardAddrs()[0], "let me in"); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("denied reverse stream: %v, want connection reset", err)
	}
	site.log.WaitFor(t, 5*time.Second, "stream refused", "service=echo", `reason="identity not in allow`, `peer="CN=\"hub\"`)
	hub.log.WaitFor(t, 5*time.Second, "stream refused by peer", "service=echo", `reason="not allowed`)
}

// namedService answers every connection with its name, then echoes.
func namedService(t *testing.T, name string) net.Listener {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte(name + ":"))
		testnet.Echo(c)
	})
	return ln
}

// whoAnswers asks the forward which hub serves it.
func whoAnswers(t *testing.T, fwd net.Addr) string {
	got, err := echoOnce(t, fwd, "")
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSuffix(got, ":")
}

// TestFailover: the first server down at start → the second is used; the
// first comes back → new streams return to it; the first dies → new
// connections go to the second within a few seconds.
func TestFailover(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	svc1, svc2 := namedService(t, "hub1"), namedService(t, "hub2")
	// hub1 comes back on its address: see testnet.RebindHost.
	host1 := testnet.RebindHost(t)
	hub1 := start(t, dir, "hub1", strings.Replace(hubTOML(p, serviceTOML("who", svc1.Addr().String(), "*")), "127.0.0.1:0", host1+":0", 1))
	addr1 := hub1.ServerAddrs()[0].String()
	hub1.stop(t) // down at start
	testnet.HoldSourcePort(t, hub1.ServerAddrs()[0].(*net.TCPAddr).Port)
	hub2 := start(t, dir, "hub2", hubTOML(p, serviceTOML("who", svc2.Addr().String(), "*")))
	addr2 := hub2.ServerAddrs()[0].String()

	site := start(t, dir, "site", strings.Replace(siteTOML(p, addr1, "who"),
		fmt.Sprintf("servers = [%q]", addr1), fmt.Sprintf("servers = [%q, %q]", addr1, addr2), 1))
	fwd := site.ForwardAddrs()[0]
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+addr2)
	if got := whoAnswers(t, fwd); got != "hub2" {
		t.Fatalf("with hub1 down, answered by %q, want hub2", got)
	}

	var cuts connTracker
	hub1b := startWith(t, dir, "hub1b", strings.Replace(hubTOML(p, serviceTOML("who", svc1.Addr().String(), "*")), "127.0.0.1:0", addr1, 1), Options{Listen: cuts.listen})
	site.log.WaitFor(t, 10*time.Second, "tunnel replaced", "tunnel=hub", "addr="+addr1, "is reachable again")
	if got := whoAnswers(t, fwd); got != "hub1" {
		t.Fatalf("after hub1 returned, answered by %q, want hub1", got)
	}

	cuts.cut()
	hub1b.stop(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := whoAnswers(t, fwd)
		if got == "hub2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub1 died; new connections answered by %q, want hub2 within 5s", got)
		}
	}
}

// TestParallelTunnels: with tunnels = 4, cutting one session's TCP
// connection resets only the streams on it; the others finish intact.
func TestParallelTunnels(t *testing.T) {
	const streams, size = 16, 1 << 20
	dir := t.TempDir()
	p := newPKI(t, dir)
	release := make(chan struct{})
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		var seed [1]byte
		if _, err := io.ReadFull(c, seed[:]); err != nil {
			return
		}
		rng := rand.NewChaCha8([32]byte{seed[0]})
		io.CopyN(c, rng, 64<<10)
		<-release
		io.CopyN(c, rng, size-64<<10)
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	closeRelease := sync.OnceFunc(func() { close(release) })
	t.Cleanup(closeRelease) // runs before serve's cleanup waits for handlers
	var cuts connTracker
	hub := startWith(t, dir, "hub", hubTOML(p, serviceTOML("bulk", ln.Addr().String(), "*")), Options{Listen: cuts.listen})
	site := start(t, dir, "site", strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String(), "bulk"),
		"[[client]]\n", "[[client]]\ntunnels = 4\n", 1))
	waitTunnels(t, site, 4)

	type outcome struct {
		reset bool
		ok    bool
	}
	results := make(chan outcome, streams)
	var started sync.WaitGroup
	for i := range streams {
		// One at a time: a stream counts toward its tunnel's load once it
		// is open, so the least loaded tunnel takes each in turn and each
		// carries streams/4. Opened at once, several could pick the same
		// tunnel before any counted.
		started.Wait()
		started.Add(1)
		go func() {
			c := testnet.Dial(t, site.ForwardAddrs()[0].String())
			c.Write([]byte{byte(i)})
			want := sha256.New()
			io.CopyN(want, rand.NewChaCha8([32]byte{byte(i)}), size)
			got := sha256.New()
			_, err := io.CopyN(got, c, 64<<10)
			started.Done()
			if err == nil {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, err = io.Copy(got, c)
			}
			results <- outcome{reset: errors.Is(err, syscall.ECONNRESET), ok: err == nil && bytes.Equal(got.Sum(nil), want.Sum(nil))}
		}()
	}
	started.Wait()
	cuts.mu.Lock()
	victim := cuts.conns[0]
	cuts.mu.Unlock()
	victim.Close()
	site.log.WaitFor(t, 10*time.Second, "tunnel lost; reconnecting", "tunnel=hub")
	closeRelease()

	var resets, intact int
	for range streams {
		r := <-results
		switch {
		case r.reset:
			resets++
		case r.ok:
			intact++
		}
	}
	if resets != streams/4 || intact != streams-streams/4 {
		t.Fatalf("%d streams reset and %d intact; want %d reset (those on the cut tunnel) and %d intact", resets, intact, streams/4, streams-streams/4)
	}
}

// waitTunnels waits (polling, with a deadline) until the agent's client
// has n live tunnels published.
func waitTunnels(t testing.TB, r *running, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.clients["hub"].Tunnels()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels up, want %d", len(r.clients["hub"].Tunnels()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProxyProtocol: the target, behind a real PROXY protocol parser, sees
// the original client address and port; with v2 also who the verified peer
// is (the SSL TLV with its CN, Postern's identities TLV) and the allow
// entry that let it in.
func TestProxyProtocol(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			raw := testnet.Listen(t)
			pl := &proxyproto.Listener{Listener: raw}
			seen := make(chan string, 1)
			tlvs := make(chan []proxyproto.TLV, 1)
			go func() {
				c, err := pl.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				seen <- c.RemoteAddr().String() + " → " + c.LocalAddr().String()
				h := c.(*proxyproto.Conn).ProxyHeader()
				list, _ := h.TLVs()
				tlvs <- list
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte(line))
			}()
			svc := serviceTOML("svc", raw.Addr().String(), "cn:site-a") + fmt.Sprintf("proxy_protocol = %q\n", version)
			_, site := startPair(t, svc, "svc")
			c := testnet.Dial(t, site.ForwardAddrs()[0].String())
			c.Write([]byte("hello\n"))
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != "hello\n" {
				t.Fatalf("echo through PROXY target: %q, %v", got, err)
			}
			want := c.LocalAddr().String() + " → " + c.RemoteAddr().String()
			if s := <-seen; s != want {
				t.Fatalf("target saw %s, want %s (the app's address → the forward's)", s, want)
			}
			got2 := map[proxyproto.PP2Type]string{}
			var ssl tlvparse.PP2SSL
			for _, tlv := range <-tlvs {
				got2[tlv.Type] = string(tlv.Value)
				if tlv.Type == proxyproto.PP2_TYPE_SSL {
					if ssl, err = tlvparse.SSL(tlv); err != nil {
						t.Fatalf("SSL TLV: %v", err)
					}
				}
			}
			if version == "v1" {
				if len(got2) != 0 {
					t.Fatalf("v1 header with TLVs %v", got2)
				}
				return
			}
			if cn, _ := ssl.ClientCN(); !ssl.Verified() || !ssl.ClientCertConn() || cn != "site-a" {
				t.Errorf("SSL TLV: verified %v, client cert %v, CN %q; want a verified client certificate CN site-a", ssl.Verified(), ssl.ClientCertConn(), cn)
			}
			if v, _ := ssl.SSLVersion(); v != "TLSv1.3" {
				t.Errorf("SSL TLV version %q, want TLSv1.3", v)
			}
			ids := strings.Split(got2[TLVPeerIdentities], "\n")
			if !slices.Contains(ids, "cn:site-a") || !slices.Contains(ids, "dns:site-a.test") {
				t.Errorf("identities TLV %q lacks cn:site-a and dns:site-a.test", got2[TLVPeerIdentities])
			}
			if got2[TLVAllowEntry] != "cn:site-a" {
				t.Errorf("allow entry TLV %q, want cn:site-a", got2[TLVAllowEntry])
			}
		})
	}
}

// TestMaxTunnelLifetime: a tunnel is renewed make-before-break: the new
// tunnel is up before the old one stops taking streams, and a stream on the
// old tunnel finishes intact.
func TestMaxTunnelLifetime(t *testing.T) {
	release := make(chan struct{})
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte("first half;"))
		<-release
		c.Write([]byte("second half"))
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	closeRelease := sync.OnceFunc(func() { close(release) })
	t.Cleanup(closeRelease) // runs before serve's cleanup waits for handlers
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("slow", ln.Addr().String(), "*")))
	site := start(t, dir, "site", strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String(), "slow"),
		"[[client]]\n", "[[client]]\nmax_tunnel_lifetime = \"1s\"\n", 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	old := testnet.Dial(t, site.ForwardAddrs()[0].String())
	old.CloseWrite()
	if _, err := io.ReadFull(old, make([]byte, len("first half;"))); err != nil {
		t.Fatal(err)
	}
	site.log.WaitFor(t, 10*time.Second, "tunnel replaced", "tunnel=hub", `reason="renewed after max_tunnel_lifetime"`)
	if n := len(site.clients["hub"].Tunnels()); n != 2 {
		t.Fatalf("%d tunnels after renewal, want 2 (the new one, and the old one draining its stream)", n)
	}
	// A new connection goes over the new tunnel while the old stream is open.
	fresh := testnet.Dial(t, site.ForwardAddrs()[0].String())
	if _, err := io.ReadFull(fresh, make([]byte, len("first half;"))); err != nil {
		t.Fatalf("new connection after renewal: %v", err)
	}
	closeRelease()
	rest, err := io.ReadAll(old)
	if err != nil || string(rest) != "second half" {
		t.Fatalf("stream on the old tunnel: %q, %v; want the rest and a clean end", rest, err)
	}
	hub.log.WaitFor(t, 10*time.Second, "tunnel closed", "peer_addr=")
}

// TestRoundRobin: with strategy = "round-robin" the parallel tunnels are
// spread over the servers, and connections are answered by both hubs.
func TestRoundRobin(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	svc1, svc2 := namedService(t, "hub1"), namedService(t, "hub2")
	hub1 := start(t, dir, "hub1", hubTOML(p, serviceTOML("who", svc1.Addr().String(), "*")))
	hub2 := start(t, dir, "hub2", hubTOML(p, serviceTOML("who", svc2.Addr().String(), "*")))
	addr1, addr2 := hub1.ServerAddrs()[0].String(), hub2.ServerAddrs()[0].String()
	site := start(t, dir, "site", strings.Replace(siteTOML(p, addr1, "who"),
		fmt.Sprintf("servers = [%q]", addr1),
		fmt.Sprintf("servers = [%q, %q]\ntunnels = 2\nstrategy = \"round-robin\"", addr1, addr2), 1))
	waitTunnels(t, site, 2)
	hub1.log.WaitFor(t, 5*time.Second, "tunnel accepted", "peer_addr=")
	hub2.log.WaitFor(t, 5*time.Second, "tunnel accepted", "peer_addr=")

	// Streams go to the least loaded tunnel: hold one open, and the next
	// connection lands on the other hub.
	first := testnet.Dial(t, site.ForwardAddrs()[0].String())
	buf := make([]byte, 5)
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatal(err)
	}
	second := whoAnswers(t, site.ForwardAddrs()[0])
	if got := strings.TrimSuffix(string(buf), ":"); got == second || (got != "hub1" && got != "hub2") || (second != "hub1" && second != "hub2") {
		t.Fatalf("answered by %q while the first connection is held by %q; want one of each hub", second, got)
	}
}

// TestReverseForwardAcrossRenewal: while the site renews its tunnel every
// second (max_tunnel_lifetime) and one long stream keeps each old tunnel
// alive, six clients connecting over and over through the hub's reverse
// forward are never reset: new streams only go to tunnels that take them.
func TestReverseForwardAcrossRenewal(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", reverseHubTOML(p))
	fwd := hub.ForwardAddrs()[0]
	site := start(t, dir, "site", strings.Replace(reverseSiteTOML(p, hub.ServerAddrs()[0].String(), ln.Addr().String(), "dns:hub.test"),
		"[[client]]\n", "[[client]]\nmax_tunnel_lifetime = \"1s\"\n", 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	// A long stream pins the first tunnel: it stays up, retiring, for the
	// whole test.
	long := testnet.Dial(t, fwd.String())
	if _, err := long.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(long, make([]byte, 4)); err != nil {
		t.Fatalf("long stream: %v", err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok int
	var failures []string
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("client %d message %d", i, n)
				got, err := echoOnce(t, fwd, msg)
				mu.Lock()
				if err != nil || got != msg {
					failures = append(failures, fmt.Sprintf("%s: got %q, %v", msg, got, err))
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	// Three renewals under load, bounded in time.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(site.log.String(), "renewed after max_tunnel_lifetime") < 3 {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := strings.Count(site.log.String(), "renewed after max_tunnel_lifetime"); n < 3 {
		t.Fatalf("%d renewals in 30s, want 3", n)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed across renewals, first: %s", len(failures), len(failures)+ok, failures[0])
	}
	t.Logf("%d connections across 3 renewals, none reset", ok)
	long.Close()
}
