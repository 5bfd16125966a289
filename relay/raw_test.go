package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
)

// rawTLSPair returns a TLS connection for Raw (its TCP connection wrapped by
// WatchEOF unless watch is false) and the peer's end of it, handshaken.
// agentIsServer picks which end accepted the TLS connection.
func rawTLSPair(t *testing.T, agentIsServer, watch bool) (agent, peer *tls.Conn) {
	t.Helper()
	ca := testca.New(t, "Raw Test CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	leaf := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}})
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	cliCfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "hub.test"}

	a, b := tcpPair(t)
	var agentConn net.Conn = a
	if watch {
		agentConn = WatchEOF(a)
	}
	if agentIsServer {
		agent, peer = tls.Server(agentConn, srvCfg), tls.Client(b, cliCfg)
	} else {
		agent, peer = tls.Client(agentConn, cliCfg), tls.Server(b, srvCfg)
	}
	errc := make(chan error, 1)
	go func() { errc <- peer.Handshake() }()
	if err := agent.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return agent, peer
}

// TestRawPeerEnds: a raw TLS peer sends 1 MiB and ends its side. After
// close_notify the application reads everything and a clean end; after a
// bare TCP FIN at a record boundary (what a crashed or killed peer leaves,
// and what crypto/tls also reports as io.EOF) it reads a reset. Each case
// with Raw's TLS connection accepted and dialed.
func TestRawPeerEnds(t *testing.T) {
	for _, role := range []struct {
		name     string
		isServer bool
	}{{"agent accepted", true}, {"agent dialed", false}} {
		for _, tc := range []struct {
			name         string
			closeNotify  bool
			watch        bool
			wantComplete bool
		}{
			{"close_notify", true, true, true},
			{"tcp FIN without close_notify", false, true, false},
			{"close_notify on an unwatched connection", true, false, false},
		} {
			t.Run(role.name+"/"+tc.name, func(t *testing.T) {
				app, plain := tcpPair(t)
				agentTLS, peer := rawTLSPair(t, role.isServer, tc.watch)
				done := make(chan error, 1)
				go func() {
					_, err := Raw(context.Background(), plain, agentTLS)
					done <- err
				}()
				payload := randomBytes(t, 1<<20)
				go func() {
					peer.SetDeadline(time.Now().Add(testWait))
					if _, err := peer.Write(payload); err != nil {
						return
					}
					if tc.closeNotify {
						peer.CloseWrite()
					} else {
						peer.NetConn().(*net.TCPConn).CloseWrite()
					}
					io.Copy(io.Discard, peer)
					peer.Close()
				}()
				app.CloseWrite()
				got, err := readAll(app)
				if tc.wantComplete {
					if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
						t.Fatalf("application read %d bytes (equal %v), %v; want all and a clean end", len(got), bytes.Equal(got, payload), err)
					}
				} else if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("application read %d bytes, then %v; want ECONNRESET", len(got), err)
				}
				select {
				case err := <-done:
					var ae *AbortError
					if tc.wantComplete && err != nil {
						t.Fatalf("Raw: %v, want nil", err)
					}
					if !tc.wantComplete && (!errors.As(err, &ae) || !errors.Is(err, errNoCloseNotify)) {
						t.Fatalf("Raw: %v, want the missing close_notify", err)
					}
				case <-time.After(testWait):
					t.Fatal("Raw did not return")
				}
			})
		}
	}
}
