package agent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// TestDenied: a peer identity not in allow, and an unknown service: the
// app's connection is closed within a second and the log names the
// identity and the service.
func TestDenied(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	services := serviceTOML("secret", ln.Addr().String(), "dns:partner-b.test", "cn:someone-else")
	// The site forwards "secret" (denied) and "missing" (unknown on the hub).
	hub, site := startPair(t, services, "secret", "missing")

	for i, tc := range []struct {
		service  string
		hubLog   []string
		siteLog  []string
		wantCode string
	}{
		{"secret",
			[]string{"stream refused", "service=secret", `reason="identity not in allow`, `peer="CN=\"site-a\"`, "dns:site-a.test",
				`allow="[\"dns:partner-b.test\", \"cn:someone-else\"]"`},
			[]string{"stream refused by peer", "via=hub", "service=secret", `reason="not allowed for`, "site-a"}, ""},
		{"missing",
			[]string{"stream refused", "service=missing", `reason="no such service here"`, `peer="CN=\"site-a\"`},
			[]string{"stream refused by peer", "via=hub", "service=missing", `reason="unknown service`}, ""},
	} {
		t.Run(tc.service, func(t *testing.T) {
			// The refusal can arrive so fast that the reset races the
			// connect or the write (the kernel reports it to the first
			// call only); wherever it lands the app must see a reset.
			start := time.Now()
			err := testnet.DialWriteDrain(t, site.ForwardAddrs()[i].String(), []byte("let me in"), 5*time.Second)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("connection closed after %s, want within 1s", elapsed)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the app's connection ended with %v, want connection reset", err)
			}
			hub.log.WaitFor(t, 5*time.Second, tc.hubLog...)
			site.log.WaitFor(t, 5*time.Second, tc.siteLog...)
		})
	}
}

// TestHandshakeFailures: each refused handshake is logged on both sides
// with its cause.
func TestHandshakeFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, dir string, p *pki) (serverName string)
		hubLog   []string
		siteLog  []string
		tls12Log []string
	}{
		{
			name: "certificate from another CA",
			setup: func(t *testing.T, dir string, p *pki) string {
				other := testca.New(t, "Other Root")
				l := other.Issue(t, testca.Options{CN: "site-a"})
				f := l.Write(t, dir, "site", p.ca) // site trusts the hub's CA, but its own cert is foreign
				p.site = f
				return "hub.test"
			},
			hubLog:  []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" was signed by an unknown authority`, `issuer CN=\"Other Root\"`, `trusted: CN=\"Test Partners CA\"`},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", "the server rejected our certificate"},
		},
		{
			name:    "wrong server name",
			setup:   func(t *testing.T, dir string, p *pki) string { return "wrong.test" },
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" is not valid for \"wrong.test\"`, "DNS:hub.test"},
		},
		{
			name: "expired server certificate",
			setup: func(t *testing.T, dir string, p *pki) string {
				l := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"},
					NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-3 * time.Hour)})
				p.hub = l.Write(t, dir, "hub", p.ca)
				return "hub.test"
			},
			hubLog:  []string{`msg="tunnel refused"`, "the client rejected our certificate"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", `server certificate CN=\"hub\" expired 3h`, "local clock", "NTP"},
		},
		{
			name: "expired client certificate",
			setup: func(t *testing.T, dir string, p *pki) string {
				l := p.ca.Issue(t, testca.Options{CN: "site-a",
					NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-26 * time.Hour)})
				p.site = l.Write(t, dir, "site", p.ca)
				return "hub.test"
			},
			hubLog: []string{`msg="tunnel refused"`, `client certificate CN=\"site-a\" expired 1d`, "NTP"},
			siteLog: []string{"tunnel not connected; retrying", "tunnel=hub", "the server rejected our certificate",
				`our own certificate CN=\"site-a\" expired 1d`, "renew it — likely this"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			serverName := tc.setup(t, dir, p)
			hub := start(t, dir, "hub", hubTOML(p, ""))
			toml := strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String()), `server_name = "hub.test"`, fmt.Sprintf("server_name = %q", serverName), 1)
			site := start(t, dir, "site", toml)
			hub.log.WaitFor(t, 10*time.Second, tc.hubLog...)
			site.log.WaitFor(t, 10*time.Second, tc.siteLog...)
		})
	}
}

// TestHandshakeNoClientCertificate: a TLS client without a certificate is
// refused, and both ends say why.
func TestHandshakeNoClientCertificate(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	cfg := &tls.Config{RootCAs: poolOf(p.ca), ServerName: "hub.test", NextProtos: []string{wire.ALPN}}
	conn, err := tls.Dial("tcp", hub.ServerAddrs()[0].String(), cfg)
	if err == nil {
		// TLS 1.3: the client learns of the refusal on its first read.
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("handshake without a client certificate succeeded")
	}
	if got := trust.Explain(err, trust.SideClient, nil, time.Now()); !strings.Contains(got, "the server rejected our certificate") {
		t.Errorf("client side explanation: %q", got)
	}
	hub.log.WaitFor(t, 5*time.Second, `msg="tunnel refused"`, `reason="the client presented no certificate`)
}

// TestBadInputToTunnelPort: junk on the tunnel port is closed without
// harm, and the agent keeps serving real tunnels.
func TestBadInputToTunnelPort(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hubCfg := strings.Replace(hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")),
		`listen = "127.0.0.1:0"`, "listen = \"127.0.0.1:0\"\nhandshake_timeout = \"500ms\"", 1)
	hub := start(t, dir, "hub", hubCfg)
	addr := hub.ServerAddrs()[0].String()

	send := func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(data)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server did not close the connection: %v", err)
		}
	}
	t.Run("random bytes", func(t *testing.T) {
		send(t, []byte{0x17, 0x99, 0x42, 0x00, 0x01, 0xfe, 0xed, 0xfa, 0xce})
		hub.log.WaitFor(t, 5*time.Second, `msg="tunnel refused"`, `reason="the client is not speaking TLS`)
	})
	t.Run("plain HTTP", func(t *testing.T) {
		send(t, []byte("GET / HTTP/1.1\r\nHost: hub\r\n\r\n"))
		hub.log.WaitFor(t, 5*time.Second, `msg="tunnel refused"`, `reason="the client sent a plain HTTP request`)
	})
	t.Run("never finishes the handshake", func(t *testing.T) {
		send(t, nil) // connect, say nothing: the handshake deadline closes it
		hub.log.WaitFor(t, 5*time.Second, `msg="tunnel refused"`, `reason="the client did not complete the TLS handshake in time`)
	})
	t.Run("still serving", func(t *testing.T) {
		site := start(t, dir, "site", siteTOML(p, addr, "echo"))
		site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
		c := testnet.Dial(t, site.ForwardAddrs()[0].String())
		c.Write([]byte("ping"))
		c.CloseWrite()
		if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
}

// TestMalformedOpenRequest: a peer that sends a malformed or oversized open
// request gets a protocol-error status.
func TestMalformedOpenRequest(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, ""))
	sess := rawSession(t, p, hub.ServerAddrs()[0].String())
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"wrong version", []byte{9, 1, 0, 2, 1, 'x'}},
		{"oversized", append([]byte{1, 1, 0xff, 0xff}, make([]byte, 70000)...)},
		{"bad service name", []byte{1, 1, 0, 3, 2, '/', '/'}},
		{"truncated metadata", []byte{1, 1, 0, 4, 1, 'x', 1, 200}},
		{"status instead of open", []byte{1, 2, 0, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := sess.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.Write(tc.data)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			s, err := wire.ReadStatus(st)
			if err != nil {
				t.Fatalf("no status: %v", err)
			}
			if s.Code != wire.StatusProtocolError {
				t.Fatalf("status %v (%q), want protocol error", s.Code, s.Reason)
			}
		})
	}
	hub.log.WaitFor(t, 5*time.Second, "stream refused", `reason="bad open request"`, `peer="CN=\"site-a\"`)
}

// rawSession opens a tunnel to addr with the site's certificate,
// for speaking the stream protocol by hand.
func rawSession(t *testing.T, p *pki, addr string) *tunnel.Tunnel {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.site.Cert, p.site.Key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert},
		RootCAs: poolOf(p.ca), ServerName: "hub.test", NextProtos: []string{wire.ALPN}})
	if err != nil {
		t.Fatal(err)
	}
	var c config.Config
	c.SetDefaults()
	sess, err := tunnel.New(conn, true, tunnel.OptionsOf(c.Tunnel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// TestReconnect: the hub goes away mid-transfer (streams in flight are
// reset) and comes back on the same address; new connections through the
// forward work again within 2s of its return.
func TestReconnect(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		testnet.Echo(c)
	})
	services := serviceTOML("echo", ln.Addr().String(), "*")
	var cuts connTracker
	// The hub comes back on its address: see testnet.RebindHost.
	hub := startWith(t, dir, "hub", strings.Replace(hubTOML(p, services), "127.0.0.1:0", testnet.RebindHost(t)+":0", 1), Options{Listen: cuts.listen})
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, addr, "echo"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	inFlight := testnet.Dial(t, site.ForwardAddrs()[0].String())
	if _, err := io.ReadFull(inFlight, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cuts.cut() // the hub's host drops off the network...
	hub.stop(t)
	testnet.HoldSourcePort(t, hub.ServerAddrs()[0].(*net.TCPAddr).Port)
	inFlight.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(inFlight); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("in-flight stream ended with %v, want connection reset", err)
	}

	// ...and comes back on the same address.
	hub2 := start(t, dir, "hub2", strings.Replace(hubTOML(p, services), "127.0.0.1:0", addr, 1))
	back := time.Now()
	for {
		c := testnet.Dial(t, site.ForwardAddrs()[0].String())
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 5)
		_, err := io.ReadFull(c, buf)
		c.Close()
		if err == nil && string(buf) == "hello" {
			break
		}
		if time.Since(back) > 2*time.Second {
			t.Fatalf("no working connection within 2s of the hub's return (last: %v)", err)
		}
	}
	if elapsed := time.Since(back); elapsed > 2*time.Second {
		t.Fatalf("first working connection %s after the hub's return, want within 2s", elapsed)
	}
	hub2.log.WaitFor(t, 5*time.Second, "tunnel accepted", "peer_addr=")
}

// TestDrain: stopping the agent lets a transfer in flight finish within
// shutdown_timeout while new connections are refused; one that outlasts
// shutdown_timeout is reset.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	slow := twoPartService(t, release)
	_, site := startPair(t, serviceTOML("slow", slow, "*"), "slow")
	fwd := site.ForwardAddrs()[0]

	c := testnet.Dial(t, fwd.String())
	c.CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, len("part one;"))); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		site.cancel()
		<-site.done
		close(stopped)
	}()
	site.log.WaitFor(t, 5*time.Second, "stopping: no new connections")
	if nc, err := net.DialTimeout("tcp", fwd.String(), time.Second); err == nil {
		nc.Close()
		t.Fatal("a new connection was accepted while draining")
	}
	close(release)
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "part two" {
		t.Fatalf("in-flight transfer: got %q, %v; want the rest and a clean end", rest, err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop after its last stream ended")
	}
}

func TestDrainDeadline(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte("never finishes"))
		io.Copy(io.Discard, c)
	})
	dir := t.TempDir()
	p := newPKI(t, dir)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("slow", ln.Addr().String(), "*")))
	toml := strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String(), "slow"), `shutdown_timeout = "5s"`, `shutdown_timeout = "300ms"`, 1)
	site := start(t, dir, "site", toml)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	site.stop(t)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("stream cut at the shutdown deadline ended with %v, want connection reset", err)
	}
	site.log.WaitFor(t, time.Second, "shutdown_timeout reached; aborting the streams still open", "wait=300ms")
	hub.log.WaitFor(t, 5*time.Second, "aborted by peer: agent shutting down")
}

// TestNoTunnelUp: a connection that arrives while no tunnel is up waits
// tunnel_wait for one, then is reset, and the log says why.
func TestNoTunnelUp(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	addr := testnet.RefusedAddr(t) // the hub is down
	site := start(t, dir, "site", strings.Replace(siteTOML(p, addr, "svc"), `tunnel_wait = "3s"`, `tunnel_wait = "300ms"`, 1))
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := testnet.Drain(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("with no tunnel up the app's read ended with %v, want connection reset", err)
	}
	site.log.WaitFor(t, 5*time.Second, "connection reset: no tunnel to carry it", "via=hub", "service=svc", "client=127.0.0.1:", "no tunnel up", "connection refused", "wait=300ms")
}
