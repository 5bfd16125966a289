//go:build unix

package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// faultHostileBudget is the hub's max_buffered and max_tunnel_buffered in
// TestFaultHostilePeer.
const faultHostileBudget = 64 << 20

// faultHostileRSSBound is the most resident memory the hub may reach while
// one authenticated peer does its worst: docs/performance.md's worst case,
// heap <= max_buffered + S x 139 KiB + T x 1.1 MiB, doubled for the Go
// collector's headroom (GOGC=100), on top of the RSS the hub started with.
// Its checks sample against the bound for the streams opened so far.
func faultHostileRSSBound(base int64, streams int64) int64 {
	return base + 2*(faultHostileBudget+streams*139<<10+2<<20)
}

// TestFaultHostilePeer: a client with a valid site certificate speaks the
// tunnel protocol itself and, at full rate, opens streams to an unknown
// service, a service it is denied, and an allowed target that accepts and
// never reads, pushing data on every stream and leaving each open. The
// hub's RSS, sampled all along, must stay under faultHostileRSSBound, and
// the hub must live through it.
func TestFaultHostilePeer(t *testing.T) {
	t.Parallel()
	e2eBinary(t)
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)

	// The stalled target: accepts and never reads.
	stalled := testnet.Listen(t)
	var held sync.Mutex
	var heldConns []net.Conn
	go func() {
		for {
			c, err := stalled.Accept()
			if err != nil {
				return
			}
			held.Lock()
			heldConns = append(heldConns, c)
			held.Unlock()
		}
	}()
	t.Cleanup(func() {
		held.Lock()
		defer held.Unlock()
		for _, c := range heldConns {
			c.Close()
		}
	})

	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", faultConf("hub", certs.hub, "5s",
		fmt.Sprintf("[tunnel]\nmax_buffered = %d\nmax_tunnel_buffered = %d\n", faultHostileBudget, faultHostileBudget),
		"[[server]]\nlisten = \"127.0.0.1:0\"\n",
		e2eServiceTOML("stalled", stalled.Addr().String(), "cn:site-a"),
		e2eServiceTOML("denied", stalled.Addr().String(), "cn:someone-else"))))
	hubAddr := hub.serverAddr(t)
	pid := hub.cmd.Process.Pid
	base, err := faultRSS(pid)
	if err != nil {
		t.Fatal(err)
	}

	cert, err := tls.LoadX509KeyPair(certs.site.Cert, certs.site.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(certs.site.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", hubAddr, &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "hub.test", NextProtos: []string{wire.ALPN},
	})
	if err != nil {
		t.Fatalf("hostile peer's TLS handshake: %v", err)
	}
	tun, err := tunnel.New(conn, true, tunnel.Options{
		StreamWindow: 256 << 10, KeepaliveInterval: 5 * time.Second, KeepaliveTimeout: 30 * time.Second, MaxStreams: 1 << 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	var peak atomic.Int64
	var pushed, opened, refusedOpens atomic.Int64
	sampled := make(chan int64, 1)
	go func() {
		sampled <- faultSampleRSS(ctx, pid, 50*time.Millisecond, func(rss int64) {
			peak.Store(max(peak.Load(), rss))
			if rss > faultHostileRSSBound(base, opened.Load()) {
				cancel() // the bound is broken: stop before the machine suffers
			}
		})
	}()

	const workers = 32 // per kind of stream
	var wg sync.WaitGroup
	frame := make([]byte, wire.FrameHeaderSize+wire.ChunkSize)
	wire.PutFrameHeader(frame, wire.FrameData, wire.ChunkSize)
	for _, service := range []string{"no-such-service", "denied", "stalled"} {
		req, err := wire.AppendOpen(nil, wire.OpenRequest{Service: service, Source: "192.0.2.1:1234", Destination: "192.0.2.2:80"})
		if err != nil {
			t.Fatal(err)
		}
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					st, err := tun.Open()
					if err != nil {
						refusedOpens.Add(1)
						if tun.Closed() {
							return
						}
						continue
					}
					opened.Add(1)
					// Left open on purpose: a hostile peer never closes.
					st.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if _, err := st.Write(req); err != nil {
						continue
					}
					for ctx.Err() == nil {
						st.SetWriteDeadline(time.Now().Add(time.Second))
						n, err := st.Write(frame)
						pushed.Add(int64(n))
						if err != nil {
							break
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	cancel()
	top := <-sampled
	top = max(top, peak.Load())
	bound := faultHostileRSSBound(base, opened.Load())
	t.Logf("hostile peer: %d streams opened (%d opens failed), %d MiB pushed; hub RSS %d MiB before, peak %d MiB (bound %d MiB)",
		opened.Load(), refusedOpens.Load(), pushed.Load()>>20, base>>20, top>>20, bound>>20)
	if top > bound {
		t.Errorf("the hub's RSS reached %d MiB under one hostile authenticated peer; the bound is %d MiB", top>>20, bound>>20)
	}
	if hub.exited() {
		t.Fatalf("the hub died under the hostile peer")
	}
}
