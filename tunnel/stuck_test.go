//go:build unix

package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
)

// A tunnel whose peer stops reading (a dead host behind a link that still
// accepts the handshake) ends within write_timeout of a write getting
// stuck, even with a write in progress under TLS and the record batching
// (closing the connection must not wait for that write).
func TestStuckLinkEndsTunnel(t *testing.T) {
	ca := testca.New(t, "stuck CA")
	leaf := ca.Issue(t, testca.Options{CN: "stuck", IPs: []string{"127.0.0.1"}})
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, s := tcpPair(t)
	c.SetWriteBuffer(16 << 10)
	s.SetReadBuffer(16 << 10)
	tc := tls.Client(WrapConn(c), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1"})
	ts := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	errs := make(chan error, 1)
	go func() { errs <- ts.Handshake() }() // and then never reads again
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	opts := testOpts()
	opts.WriteTimeout = time.Second
	opts.KeepaliveTimeout = time.Second
	opts.KeepaliveInterval = time.Hour // the write, not a ping, must notice
	client, err := New(tc, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := st.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	}()
	select {
	case <-client.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("tunnel still up 20 s after its writes got stuck (write_timeout 1 s)")
	}
	select {
	case err := <-wrote:
		t.Logf("stuck write ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck write did not return after the tunnel ended")
	}
}
