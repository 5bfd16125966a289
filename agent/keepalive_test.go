package agent

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// blackhole forwards TCP to target until freeze, after which it silently
// drops everything and never closes: a peer that died without a FIN, as
// behind a failed firewall or a pulled cable.
type blackhole struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once

	mu    sync.Mutex
	conns []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	b := &blackhole{ln: testnet.Listen(t), frozen: make(chan struct{})}
	testnet.Serve(t, b.ln, func(c *net.TCPConn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		done := make(chan struct{}, 2)
		go func() { b.pipe(up, c); done <- struct{}{} }()
		go func() { b.pipe(c, up); done <- struct{}{} }()
		<-done
		c.Close()
		up.Close()
		<-done
	})
	// Registered after serve, so it runs first: a frozen connection ends
	// only when someone closes it.
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

// pipe copies until frozen, then swallows what arrives.
func (b *blackhole) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-b.frozen:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (b *blackhole) freeze() { b.once.Do(func() { close(b.frozen) }) }

// TestKeepaliveDetectsDeadPeer: a tunnel whose peer stops answering
// without closing is declared dead after keepalive_interval +
// keepalive_timeout, and the client reconnects.
func TestKeepaliveDetectsDeadPeer(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")))
	hole := newBlackhole(t, hub.ServerAddrs()[0].String())
	site := start(t, dir, "site", strings.Replace(siteTOML(p, hole.ln.Addr().String(), "echo"),
		"[tunnel]\n", "[tunnel]\nkeepalive_interval = \"200ms\"\nkeepalive_timeout = \"300ms\"\n", 1))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got, err := echoOnce(t, site.ForwardAddrs()[0], "alive"); err != nil || got != "alive" {
		t.Fatalf("before the peer died: %q, %v", got, err)
	}

	hole.freeze()
	lost := time.Now()
	site.log.WaitFor(t, 10*time.Second, "tunnel lost; reconnecting", "tunnel=hub", `reason="no answer to a keepalive ping within keepalive_timeout (300ms)`)
	// 200ms + 300ms, with room for a loaded machine; the default settings
	// make the same bound 20s.
	if d := time.Since(lost); d > 5*time.Second {
		t.Errorf("dead peer noticed after %s", d)
	}
}
