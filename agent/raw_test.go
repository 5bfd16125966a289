package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// Tests of mux = false: the peer is a plain mutual-TLS endpoint (stunnel,
// HAProxy, an application), played here by crypto/tls with the test PKI.

// rawPeerServerTLS is a test TLS server with the hub's certificate that
// requires a client certificate from the test CA.
func rawPeerServerTLS(t *testing.T, p *pki) *tls.Config {
	cert, err := tls.LoadX509KeyPair(p.hub.Cert, p.hub.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: poolOf(p.ca), MinVersion: tls.VersionTLS12}
}

// rawPeerClientTLS is a test TLS client with site-a's certificate.
func rawPeerClientTLS(t *testing.T, p *pki) *tls.Config {
	cert, err := tls.LoadX509KeyPair(p.site.Cert, p.site.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: poolOf(p.ca), ServerName: "hub.test"}
}

// rawPeer is a test TLS server that counts the TCP connections it accepts
// and runs handle for each one that completes a handshake.
type rawPeer struct {
	ln       net.Listener
	accepted atomic.Int64
	changed  chan struct{} // a receive per accepted connection
}

func serveRawPeer(t *testing.T, cfg *tls.Config, handle func(c *tls.Conn)) *rawPeer {
	rp := &rawPeer{ln: testnet.Listen(t), changed: make(chan struct{}, 1000)}
	testnet.Serve(t, rp.ln, func(c *net.TCPConn) {
		rp.accepted.Add(1)
		rp.changed <- struct{}{}
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(testWaitRaw))
		if err := tc.Handshake(); err != nil {
			return
		}
		handle(tc)
	})
	return rp
}

const testWaitRaw = 20 * time.Second

// endWithoutCloseNotify ends a TLS connection's sending side the way a
// crashed or killed peer does: a TCP FIN at a record boundary and no TLS
// close_notify. The read side stays open, so unread bytes cause no reset.
func endWithoutCloseNotify(c *tls.Conn) error {
	return c.NetConn().(*net.TCPConn).CloseWrite()
}

// rawSiteTOML is siteTOML with its [[client]] set to mux = false.
func rawSiteTOML(p *pki, addr string, services ...string) string {
	return strings.Replace(siteTOML(p, addr, services...), "[[client]]\n", "[[client]]\nmux = false\n", 1)
}

// rawHubTOML is hubTOML whose [[server]] is mux = false for service.
func rawHubTOML(p *pki, service, services string) string {
	return strings.Replace(hubTOML(p, services), `listen = "127.0.0.1:0"`,
		"listen = \"127.0.0.1:0\"\nmux = false\nservice = \""+service+"\"", 1)
}

// TestRawClientPeerEnds: a mux = false [[client]]'s peer sends 1 MiB and
// ends. With close_notify the application reads all of it and a clean end;
// with a bare TCP FIN (the peer crashed) it must read a reset, never a
// clean end: crypto/tls reports both as io.EOF.
func TestRawClientPeerEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
	}{{"close_notify", true}, {"tcp FIN without close_notify", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			payload := make([]byte, 1<<20)
			rand.Read(payload)
			// The peer sends once the application's dial has returned:
			// the reset the bare FIN brings could otherwise reach the
			// application's socket before its connect completes, and the
			// dial fail with it.
			dialed := make(chan struct{})
			peer := serveRawPeer(t, rawPeerServerTLS(t, p), func(c *tls.Conn) {
				select {
				case <-dialed:
				case <-time.After(testWaitRaw):
					return
				}
				if _, err := c.Write(payload); err != nil {
					return
				}
				if tc.clean {
					c.CloseWrite()
				} else {
					endWithoutCloseNotify(c)
				}
				io.Copy(io.Discard, c)
			})
			site := start(t, dir, "site", rawSiteTOML(p, peer.ln.Addr().String(), "any"))

			app := testnet.Dial(t, site.ForwardAddrs()[0].String())
			close(dialed)
			app.CloseWrite()
			app.SetDeadline(time.Now().Add(testWaitRaw))
			got, err := io.ReadAll(app)
			if tc.clean {
				if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
					t.Fatalf("application read %d bytes (equal: %v), %v; want all %d and a clean end", len(got), bytes.Equal(got, payload), err, len(payload))
				}
				return
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("application read %d bytes, then %v; want a connection reset (the peer never sent close_notify)", len(got), err)
			}
			site.log.WaitFor(t, 5*time.Second, "raw TLS", "reset", "close_notify")
		})
	}
}

// TestRawServerPeerEnds: the same at a mux = false [[server]]: a raw TLS
// client sends 1 MiB to the service's target and ends; the target sees a
// clean end only after close_notify, a reset otherwise.
func TestRawServerPeerEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
	}{{"close_notify", true}, {"tcp FIN without close_notify", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			type received struct {
				sum [32]byte
				n   int
				err error
			}
			got := make(chan received, 1)
			target := testnet.Listen(t)
			testnet.Serve(t, target, func(c *net.TCPConn) {
				c.SetDeadline(time.Now().Add(testWaitRaw))
				b, err := io.ReadAll(c)
				got <- received{sha256.Sum256(b), len(b), err}
				c.CloseWrite()
			})
			hub := start(t, dir, "hub", rawHubTOML(p, "sink", serviceTOML("sink", target.Addr().String(), "dns:site-a.test")))

			payload := make([]byte, 1<<20)
			rand.Read(payload)
			c, err := tls.Dial("tcp", hub.ServerAddrs()[0].String(), rawPeerClientTLS(t, p))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testWaitRaw))
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
			if tc.clean {
				c.CloseWrite()
			} else {
				endWithoutCloseNotify(c)
			}
			var r received
			select {
			case r = <-got:
			case <-time.After(testWaitRaw):
				t.Fatal("the target saw no end of the transfer")
			}
			if tc.clean {
				if r.err != nil || r.sum != sha256.Sum256(payload) {
					t.Fatalf("target read %d bytes (equal: %v), %v; want all %d and a clean end", r.n, r.sum == sha256.Sum256(payload), r.err, len(payload))
				}
				// The target's end reaches the client as close_notify.
				if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
					t.Fatalf("client read %q, %v after the target's end; want a clean end", rest, err)
				}
				return
			}
			if !errors.Is(r.err, syscall.ECONNRESET) {
				t.Fatalf("target read %d bytes, then %v; want a connection reset (the client never sent close_notify)", r.n, r.err)
			}
		})
	}
}

// TestRawClientDialsOnDemand: a mux = false [[client]] keeps no tunnel up:
// its peer sees no connection until an application connects, then exactly
// one per forwarded connection.
func TestRawClientDialsOnDemand(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	peer := serveRawPeer(t, rawPeerServerTLS(t, p), func(c *tls.Conn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	site := start(t, dir, "site", rawSiteTOML(p, peer.ln.Addr().String(), "echo"))
	site.log.WaitFor(t, 10*time.Second, "agent running", "agent=site-a")

	// The agent is up; one forwarded connection makes one TLS connection.
	// A tunnel keeper would have dialed first (it starts before the agent
	// says it runs) and again every backoff (50ms–500ms here), during the
	// full handshake and round trip below.
	got, err := echoOnce(t, site.ForwardAddrs()[0], "hello")
	if err != nil || got != "hello" {
		t.Fatalf("echo through the raw client: %q, %v", got, err)
	}
	if n := peer.accepted.Load(); n != 1 {
		t.Fatalf("the peer accepted %d connections for one forwarded connection, want 1", n)
	}
	if strings.Contains(site.log.String(), "retrying") {
		t.Errorf("the raw client tried to keep a tunnel up:\n%s", site.log.String())
	}
}

// TestRevokeRawPeer: a CRL that revokes the peer of a live mux = false
// connection cuts it within seconds, like a tunnel: at a [[server]] (the
// peer is a raw TLS client) and at a [[client]] (the peer is a raw TLS
// server). The application and the peer both see the connection end.
func TestRevokeRawPeer(t *testing.T) {
	t.Run("server side", func(t *testing.T) {
		dir := t.TempDir()
		p := newPKI(t, dir)
		siteLeaf := p.ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
		p.site = siteLeaf.Write(t, dir, "site", p.ca)
		crl := filepath.Join(dir, "partners.crl")
		writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour))
		target := testnet.Listen(t)
		testnet.Serve(t, target, testnet.Echo)
		hub := start(t, dir, "hub", withServerKeys(rawHubTOML(p, "echo", serviceTOML("echo", target.Addr().String(), "dns:site-a.test")),
			fmt.Sprintf("crl = [%q]", crl)))

		c, err := tls.Dial("tcp", hub.ServerAddrs()[0].String(), rawPeerClientTLS(t, p))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, "before")

		writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour), siteLeaf.Cert.SerialNumber)
		if err := hub.Reload(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the revoked client's connection: read %v, want a connection reset within 5s", err)
		}
		hub.log.WaitFor(t, 5*time.Second, "raw TLS connection cut", `CN=\"site-a\"`, "revoked")
	})
	t.Run("client side", func(t *testing.T) {
		dir := t.TempDir()
		p := newPKI(t, dir)
		hubLeaf := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
		p.hub = hubLeaf.Write(t, dir, "hub", p.ca)
		crl := filepath.Join(dir, "partners.crl")
		writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour))
		peerEnd := make(chan error, 1)
		peer := serveRawPeer(t, rawPeerServerTLS(t, p), func(c *tls.Conn) {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					select {
					case peerEnd <- err:
					default: // only the first connection's end is wanted
					}
					return
				}
				c.Write(buf[:n])
			}
		})
		site := start(t, dir, "site", withClientKeys(rawSiteTOML(p, peer.ln.Addr().String(), "echo"), fmt.Sprintf("crl = [%q]", crl)))

		app := testnet.Dial(t, site.ForwardAddrs()[0].String())
		roundTrip(t, app, "before")

		writeCRL(t, p.ca, crl, time.Now().Add(24*time.Hour), hubLeaf.Cert.SerialNumber)
		if err := site.Reload(); err != nil {
			t.Fatal(err)
		}
		app.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := testnet.Drain(app); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the application's connection to the revoked peer: %v, want a connection reset within 5s", err)
		}
		site.log.WaitFor(t, 5*time.Second, "raw TLS connection cut", `CN=\"hub\"`, "revoked")
		select {
		case err := <-peerEnd:
			if errors.Is(err, io.EOF) {
				t.Fatalf("the revoked peer read a clean end (close_notify), want a cut")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the revoked peer's connection stayed open")
		}
	})
}
