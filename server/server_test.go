package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// testServer is a Server on loopback with a fresh CA.
type testServer struct {
	*Server
	addr    string
	logs    *testnet.LogBuffer
	refused chan Cause
	tunnels chan struct{}
	client  *tls.Config // a partner's configuration
}

func startServer(t *testing.T, set func(s *Server)) *testServer {
	t.Helper()
	ts := newTestServer(t, set)
	ts.serve(t, testnet.Listen(t))
	return ts
}

// newTestServer is startServer's server, not yet serving.
func newTestServer(t *testing.T, set func(s *Server)) *testServer {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t, "Test Partners CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", IPs: []string{"127.0.0.1"}}).Write(t, dir, "hub", ca)
	m, err := trust.LoadMaterial(trust.Files{Cert: hub.Cert, Key: hub.Key, CA: hub.CA, MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	site := ca.Issue(t, testca.Options{CN: "site-a"})
	cert, err := tls.X509KeyPair(site.CertPEM, site.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	ts := &testServer{
		logs:    &testnet.LogBuffer{},
		refused: make(chan Cause, 1024),
		tunnels: make(chan struct{}, 16),
		client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots,
			ServerName: "127.0.0.1", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13},
	}
	ts.Server = &Server{
		Creds:            trust.NewCredentials(m),
		HandshakeTimeout: 10 * time.Second, HelloTimeout: 10 * time.Second,
		MaxHandshakes: 128, MaxHandshakesPerAddress: 8,
		Options: tunnel.Options{KeepaliveInterval: time.Minute, KeepaliveTimeout: time.Minute,
			StreamWindow: 256 << 10, MaxStreams: 16},
		Log: slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handle: func(tun *tunnel.Tunnel) {
			tun.Close()
			ts.tunnels <- struct{}{}
		},
		Refused: func(c Cause) {
			select {
			case ts.refused <- c:
			default:
			}
		},
	}
	set(ts.Server)
	return ts
}

// serve runs the server on ln until the test ends.
func (ts *testServer) serve(t *testing.T, ln net.Listener) {
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ts.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// dialFrom connects to the server from a loopback source address.
func (ts *testServer) dialFrom(t *testing.T, src string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// tunnel completes a partner's TLS handshake from src and waits until the
// server hands the tunnel over.
func (ts *testServer) tunnel(t *testing.T, src string) error {
	c := tls.Client(ts.dialFrom(t, src), ts.client)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		return err
	}
	select {
	case <-ts.tunnels:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("no tunnel within 5s of the handshake")
	}
}

func (ts *testServer) waitCause(t *testing.T, want Cause) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case c := <-ts.refused:
			if c == want {
				return
			}
		case <-timeout:
			t.Fatalf("no refusal with cause %q within 5s; log:\n%s", want, ts.logs)
		}
	}
}

// TestProbe: a connection closed without a byte, as a load balancer's
// health check does (with a FIN or a reset), is counted and logged only at
// debug level.
func TestProbe(t *testing.T) {
	ts := startServer(t, func(*Server) {})
	c := ts.dialFrom(t, "127.0.0.1")
	c.Close()
	ts.waitCause(t, CauseProbe)
	ts.logs.WaitFor(t, 5*time.Second, `level=DEBUG msg="tunnel probe: closed without sending a byte"`)

	c = ts.dialFrom(t, "127.0.0.1")
	c.SetLinger(0)
	c.Close()
	ts.waitCause(t, CauseProbe)
	if strings.Contains(ts.logs.String(), "level=WARN") {
		t.Fatalf("a probe logged a warning:\n%s", ts.logs)
	}
	// A connection that sends a byte and closes is not a probe.
	c = ts.dialFrom(t, "127.0.0.1")
	c.Write([]byte{0x16})
	c.Close()
	ts.waitCause(t, CauseClosed)
	ts.logs.WaitFor(t, 5*time.Second, `level=WARN msg="tunnel refused"`, "cause=closed", "the client closed the connection during the TLS handshake")
}

// TestHelloTimeout: a connection that sends no ClientHello, or only part
// of one, is closed after hello_timeout, long before handshake_timeout.
func TestHelloTimeout(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.HelloTimeout = 300 * time.Millisecond })
	for _, first := range [][]byte{nil, {0x16, 0x03, 0x01, 0x02, 0x00, 0x01}} {
		c := ts.dialFrom(t, "127.0.0.1")
		c.Write(first)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("after %x: %v, want the server to close the connection", first, err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("after %x the connection was closed after %s, want hello_timeout (300ms)", first, took)
		}
	}
	ts.logs.WaitFor(t, time.Second, `msg="tunnel refused"`, "cause=timeout",
		`reason="the client did not complete the TLS handshake in time: no ClientHello within 300ms (hello_timeout)"`)
	if err := ts.tunnel(t, "127.0.0.1"); err != nil {
		t.Fatalf("a partner's tunnel: %v", err)
	}
}

// TestSilentFlood: silent connections fill every handshake slot, from
// many addresses and from the partner's own; the partner's handshake still
// succeeds at once, not after hello_timeout (10s here) or
// handshake_timeout.
func TestSilentFlood(t *testing.T) {
	ts := startServer(t, func(s *Server) {
		s.MaxHandshakes = 16
		s.MaxHandshakesPerAddress = 4
	})
	flood := func(sources ...string) {
		var wg sync.WaitGroup
		for _, src := range sources {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					ts.dialFrom(t, src)
				}
			}()
		}
		wg.Wait()
	}
	for _, tc := range []struct{ name, partner string }{
		{"other addresses", "127.0.0.1"},
		{"same address", "127.0.1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flood("127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.5", "127.0.1.6")
			start := time.Now()
			if err := ts.tunnel(t, tc.partner); err != nil {
				t.Fatalf("partner's tunnel beside 60 silent connections: %v", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("the partner's tunnel took %s beside silent connections", took)
			}
		})
	}
	total, fromOne, _ := ts.gate.counts(sourceOf(&net.TCPAddr{IP: net.ParseIP("127.0.1.1")}))
	if total > 16 || fromOne > 4 {
		t.Fatalf("%d handshakes in progress, %d from 127.0.1.1: bounds are 16 and 4", total, fromOne)
	}
	ts.logs.WaitFor(t, time.Second, `msg="tunnel refused"`, "cause=busy", "to make room for a new connection")
}

// TestSilentFloodRenewed: silent connections that are dialed again as soon
// as the server closes them (so the port is never free of them) still
// leave room for a partner: its tunnel comes up within a few attempts.
func TestSilentFloodRenewed(t *testing.T) {
	ts := startServer(t, func(s *Server) {
		s.MaxHandshakes = 16
		s.MaxHandshakesPerAddress = 4
	})
	stop := make(chan struct{})
	var dialers, readers sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for i := range 6 {
		src := fmt.Sprintf("127.0.3.%d", i+1)
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
			for range 5000 { // bounded: at most 5000 dials per source
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", ts.addr)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				// Hold it until the server closes it.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				readers.Add(1)
				go func() {
					defer readers.Done()
					io.Copy(io.Discard, c)
				}()
			}
		}()
	}
	defer func() {
		close(stop)
		dialers.Wait()
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()
	start := time.Now()
	var err error
	for attempt := 1; attempt <= 20 && time.Since(start) < 3*time.Second; attempt++ {
		if err = ts.tunnel(t, "127.0.0.1"); err == nil {
			t.Logf("partner's tunnel up after %d attempts, %s", attempt, time.Since(start).Round(time.Millisecond))
			return
		}
	}
	t.Fatalf("no tunnel within 3s beside a renewed flood: %v", err)
}
