package server

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// synRecv counts the connections to 127.0.0.1:port that the kernel holds
// half-accepted (SYN_RECV in /proc/net/tcp): with TCP_DEFER_ACCEPT, those
// whose client has sent nothing yet.
func synRecv(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[1] == local && fields[3] == "03" {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitDeferring waits until Serve, on its goroutine, has set
// TCP_DEFER_ACCEPT on ln.
func waitDeferring(t *testing.T, ln net.Listener) {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var v int
		var gerr error
		rc.Control(func(fd uintptr) {
			v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
		})
		if gerr != nil {
			t.Fatal(gerr)
		}
		if v > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("Serve did not set TCP_DEFER_ACCEPT within 5s")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// TestDeferAcceptLateHellos: a reconnect storm of partners that connect
// at once but write their hellos late (busy partners: the hub is faster
// at accepting than they are at writing), ten times max_handshakes of
// them, all come up at the first attempt. Without DeferAccept the hub
// accepted them before their hellos, and, at max_handshakes, evicted the
// oldest as silent to make room for the next, equally silent one; with
// it, the kernel holds them until their hellos arrive.
func TestDeferAcceptLateHellos(t *testing.T) {
	const max, n = 2, 20
	ts := newTestServer(t, func(s *Server) {
		s.MaxHandshakes = max
		s.MaxHandshakesPerAddress = 0
		s.DeferAccept = true
		s.deferSeconds = 10 // the kernel holds silent connections well past the test's steps, however slow the machine
	})
	ln := testnet.Listen(t)
	ts.serve(t, ln)
	waitDeferring(t, ln)
	var conns []net.Conn
	for i := range n {
		c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("partner %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	// Before any hello: all n wait in the kernel, or (the defect) the hub
	// took them and evicted one.
	port := ln.Addr().(*net.TCPAddr).Port
	deadline := time.Now().Add(10 * time.Second)
	for synRecv(t, port) < n {
		select {
		case c := <-ts.refused:
			t.Fatalf("a partner's connection was accepted before its hello and refused (%s); log:\n%s", c, ts.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d silent connections held by the kernel after 10s", synRecv(t, port), n)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	errs := make(chan error, n)
	for _, c := range conns {
		go func() {
			tc := tls.Client(c, ts.client)
			tc.SetDeadline(time.Now().Add(30 * time.Second))
			errs <- tc.Handshake()
		}()
	}
	ts.wantAllUp(t, errs, n)
}

// TestDeferAcceptProbe: with DeferAccept, a load balancer's probe that
// closes its connection without a byte still reaches the server (the FIN
// is data enough for the kernel) and is counted as a probe, not logged as
// a warning.
func TestDeferAcceptProbe(t *testing.T) {
	ts := newTestServer(t, func(s *Server) { s.DeferAccept = true })
	ln := testnet.Listen(t)
	ts.serve(t, ln)
	waitDeferring(t, ln)
	c := ts.dialFrom(t, "127.0.0.1")
	c.Close()
	ts.waitCause(t, CauseProbe)
	ts.logs.WaitFor(t, 5*time.Second, `level=DEBUG msg="tunnel probe: closed without sending a byte"`)
	if strings.Contains(ts.logs.String(), "level=WARN") {
		t.Fatalf("a probe logged a warning:\n%s", ts.logs)
	}
	if err := ts.tunnel(t, "127.0.0.1"); err != nil {
		t.Fatalf("partner's tunnel after a probe: %v", err)
	}
}

// TestSilentFloodSustainedDeferred: TestSilentFloodSustained with
// DeferAccept, as a hub runs: the silent connections wait in the kernel
// (and, past its queue of half-open connections, come in with SYN
// cookies), and a partner still gets in at once or soon after.
func TestSilentFloodSustainedDeferred(t *testing.T) { silentFloodSustained(t, true) }
