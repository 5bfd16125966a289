//go:build unix

package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/relay"
)

// tlsTunnelPair returns both ends of a tunnel over loopback TCP and mutual
// TLS 1.3 (ECDSA P-256), wrapped as agents wrap it (WrapConn).
func tlsTunnelPair(t testing.TB, opts Options) (client, server *Tunnel) {
	t.Helper()
	ca := testca.New(t, "bench CA")
	leaf := ca.Issue(t, testca.Options{CN: "bench", IPs: []string{"127.0.0.1"}})
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, s := tcpPair(t)
	tc := tls.Client(WrapConn(c), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	ts := tls.Server(WrapConn(s), &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	errs := make(chan error, 1)
	go func() { errs <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	client, err := New(tc, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	server, err = New(ts, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// BenchmarkRoundTrip measures one small request and its answer (64 bytes
// each way) on kept-alive connections, the whole path a database query
// takes between two agents: application → plaintext socket → relay →
// tunnel (yamux over TLS on loopback) → relay → target socket → an echo
// "target", and back. conns connections run at once; ns/op and allocs/op
// are per request, for the whole process (both agents, application and
// target), and so is cpu-ns/op: user and system CPU time of the process,
// which a machine shared with other work disturbs less than ns/op.
func BenchmarkRoundTrip(b *testing.B) {
	for _, conns := range []int{1, 8} {
		b.Run("c="+strconv.Itoa(conns), func(b *testing.B) { benchRoundTrip(b, conns) })
	}
}

func benchRoundTrip(b *testing.B, conns int) {
	client, server := tlsTunnelPair(b, testOpts())
	ctx := context.Background()
	var relays sync.WaitGroup
	apps := make([]*net.TCPConn, conns)
	for i := range apps {
		app, plain := tcpPair(b)
		targetPlain, target := tcpPair(b)
		opened, st := admittedStreams(b, client, server)
		relays.Add(2)
		go func() { defer relays.Done(); relay.Stream(ctx, plain, opened, nil) }()
		go func() { defer relays.Done(); relay.Stream(ctx, targetPlain, st, nil) }()
		go func() { // the target: echo until the relay half-closes
			io.Copy(target, target)
			target.CloseWrite()
		}()
		apps[i] = app
	}
	req := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	var wg sync.WaitGroup
	for i, app := range apps {
		n := b.N / conns
		if i < b.N%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := make([]byte, len(req))
			for range n {
				if _, err := app.Write(req); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(app, resp); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	for _, app := range apps {
		app.CloseWrite()
		io.Copy(io.Discard, app)
	}
	relays.Wait()
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// admittedStreams opens a stream from client, accepts it on server, and
// admits both ends (as the agents do once the open request is answered).
func admittedStreams(t testing.TB, client, server *Tunnel) (opened, accepted *Stream) {
	t.Helper()
	acc := make(chan *Stream, 1)
	go func() {
		st, err := server.Accept()
		if err != nil {
			close(acc)
			return
		}
		st.Admit()
		acc <- st
	}()
	opened, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	opened.Admit()
	accepted = <-acc
	if accepted == nil {
		t.Fatal("accept failed")
	}
	return opened, accepted
}
