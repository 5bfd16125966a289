package server

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// acceptQueue is the length of the kernel's accept queue of the listener
// on 127.0.0.1:port (rx_queue of its LISTEN line in /proc/net/tcp):
// connections complete in the kernel that the server has not taken.
func acceptQueue(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[1] == local && fields[3] == "0A" {
			_, rx, _ := strings.Cut(fields[4], ":")
			n, err := strconv.ParseUint(rx, 16, 32)
			if err != nil {
				t.Fatalf("accept queue of port %d: %q: %v", port, fields[4], err)
			}
			return int(n)
		}
	}
	t.Fatalf("no listener on port %d in /proc/net/tcp", port)
	return 0
}

// stallAfterHello lets the first write (the ClientHello) through and
// holds every later one until release is closed: a client past its hello
// whose handshake does not end.
// stalled is closed once it holds a write: the server has answered the
// hello, so the client's handshake is past it.
type stallAfterHello struct {
	net.Conn
	once    sync.Once
	wrote   bool
	stalled chan struct{}
	release chan struct{}
}

func (c *stallAfterHello) Write(b []byte) (int, error) {
	if c.wrote {
		c.once.Do(func() { close(c.stalled) })
		<-c.release
	}
	c.wrote = true
	return c.Conn.Write(b)
}

// TestQueueDrainsListenBacklog: while every handshake slot is taken by a
// client past its hello, the server still takes new connections off the
// kernel's accept queue (into its own, bounded queue), so a storm larger
// than the kernel's listen queues does not overflow them (SYNs dropped and
// sent again seconds later, or SYN cookies); once the slot frees, every
// waiting partner comes up, in turn, none refused. Before, the accept loop
// waited for the slot and left them in the kernel's queue.
func TestQueueDrainsListenBacklog(t *testing.T) {
	const n = 20
	ts := newTestServer(t, func(s *Server) {
		s.MaxHandshakes = 1
		s.MaxHandshakesPerAddress = 0
	})
	ln := testnet.Listen(t)
	ts.serve(t, ln)
	port := ln.Addr().(*net.TCPAddr).Port

	// One client takes the only slot and stays past its hello.
	stuck := &stallAfterHello{Conn: ts.dialFrom(t, "127.0.0.1"), stalled: make(chan struct{}), release: make(chan struct{})}
	stuckDone := make(chan error, 1)
	go func() {
		tc := tls.Client(stuck, ts.client)
		tc.SetDeadline(time.Now().Add(30 * time.Second))
		stuckDone <- tc.Handshake()
	}()
	select {
	case <-stuck.stalled:
	case err := <-stuckDone:
		t.Fatalf("the stalled client's handshake ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not answer the stalled client's hello within 10s")
	}

	errs := make(chan error, n)
	var conns []*firstWrite
	for range n {
		c := &firstWrite{Conn: ts.dialFrom(t, "127.0.0.1"), wrote: make(chan struct{})}
		conns = append(conns, c)
		go func() {
			tc := tls.Client(c, ts.client)
			tc.SetDeadline(time.Now().Add(30 * time.Second))
			errs <- tc.Handshake()
		}()
	}
	for _, c := range conns {
		<-c.wrote                // bounded by the handshakes' deadline
		waitDelivered(t, c.Conn) // every hello in the server's socket: none is taken for silent
	}
	// The slot stays taken (handshake_timeout is 10s here); the kernel's
	// accept queue must empty all the same.
	deadline := time.Now().Add(5 * time.Second)
	for q := acceptQueue(t, port); q > 0; q = acceptQueue(t, port) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left in the kernel's accept queue while the handshake slot is taken", q)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	close(stuck.release)
	if err := <-stuckDone; err != nil {
		t.Fatalf("the stalled client's handshake: %v", err)
	}
	for i := range n {
		if err := <-errs; err != nil {
			t.Fatalf("partner handshake %d of %d: %v; log:\n%s", i+1, n, err, ts.logs)
		}
	}
	for i := range n + 1 {
		select {
		case <-ts.tunnels:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d tunnels handed over", i, n+1)
		}
	}
	select {
	case c := <-ts.refused:
		t.Fatalf("a partner was refused (%s); log:\n%s", c, ts.logs)
	default:
	}
}
