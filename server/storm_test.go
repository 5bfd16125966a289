package server

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// firstWrite closes wrote once the first Write on the connection returns
// (for a TLS client: its ClientHello is in the socket).
type firstWrite struct {
	net.Conn
	once  sync.Once
	wrote chan struct{}
}

func (c *firstWrite) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.once.Do(func() { close(c.wrote) })
	return n, err
}

// TestStormPastMaxHandshakes: a reconnect storm of ten times
// max_handshakes partners, whose hellos all wait in their sockets before
// the server accepts any, all come up at the first attempt: none is
// evicted as silent (its hello is in the socket, merely unread) and none
// is dropped (the accept loop waits for a slot instead). The server
// starts once every hello is in its socket, not merely written: on a busy
// machine loopback delivers a little later.
func TestStormPastMaxHandshakes(t *testing.T) {
	const max, n = 4, 40
	ts := newTestServer(t, func(s *Server) {
		s.MaxHandshakes = max
		s.MaxHandshakesPerAddress = 0
	})
	ln := testnet.Listen(t)
	errs := make(chan error, n)
	var wrote sync.WaitGroup
	var conns []net.Conn
	for i := range n {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String()) // completed by the kernel: in the backlog
		if err != nil {
			t.Fatalf("partner %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		fw := &firstWrite{Conn: c, wrote: make(chan struct{})}
		wrote.Add(1)
		go func() {
			<-fw.wrote
			wrote.Done()
		}()
		go func() {
			tc := tls.Client(fw, ts.client)
			tc.SetDeadline(time.Now().Add(30 * time.Second))
			errs <- tc.Handshake()
		}()
	}
	wrote.Wait() // every hello sent; the handshakes' deadline bounds the wait
	for _, c := range conns {
		waitDelivered(t, c) // and in the server's socket
	}
	ts.serve(t, ln)
	ts.wantAllUp(t, errs, n)
	if strings.Contains(ts.logs.String(), "tunnel refused") {
		t.Fatalf("a partner was refused; log:\n%s", ts.logs)
	}
}

// wantAllUp waits for n partners' handshakes (errs) and their tunnels, and
// fails if a handshake failed or any partner was refused.
func (ts *testServer) wantAllUp(t *testing.T, errs <-chan error, n int) {
	t.Helper()
	for i := range n {
		if err := <-errs; err != nil {
			t.Fatalf("partner handshake %d of %d: %v; log:\n%s", i+1, n, err, ts.logs)
		}
	}
	for i := range n {
		select {
		case <-ts.tunnels:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d tunnels handed over", i, n)
		}
	}
	select {
	case c := <-ts.refused:
		t.Fatalf("a partner was refused (%s); log:\n%s", c, ts.logs)
	default:
	}
}
