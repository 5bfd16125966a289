//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// packetSource gives one packet per Read from a channel. When reached is
// not nil, it is closed as Read is called for the packet after the first
// after packets: the reader has dealt with all of those.
type packetSource struct {
	packets chan []byte
	n       int // packets read so far
	after   int
	reached chan struct{}
}

func (s *packetSource) Read(b []byte) (int, error) {
	if s.reached != nil && s.n == s.after {
		close(s.reached)
		s.reached = nil
	}
	p, ok := <-s.packets
	if !ok {
		return 0, io.EOF
	}
	s.n++
	return copy(b, p), nil
}

// packetSink records each Write as one packet with the time it came.
type packetSink struct {
	mu      sync.Mutex
	packets [][]byte
	at      []time.Time
	gate    chan struct{} // when not nil, each Write waits for a value
	entered chan struct{}
}

func (s *packetSink) Write(b []byte) (int, error) {
	if s.gate != nil {
		s.entered <- struct{}{}
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.packets = append(s.packets, bytes.Clone(b))
	s.at = append(s.at, time.Now())
	return len(b), nil
}

// TestDelayLineKeepsOrderAndDelay: every packet comes out whole, in the
// order it went in, and no sooner than the delay after it was read.
func TestDelayLineKeepsOrderAndDelay(t *testing.T) {
	const delay = 15 * time.Millisecond
	src := &packetSource{packets: make(chan []byte)}
	sink := &packetSink{}
	var dropped atomic.Int64
	done := make(chan error, 1)
	go func() { done <- delayLine(context.Background(), src, sink, delay, 100, &dropped) }()

	var sent []time.Time
	var want [][]byte
	for i := range 20 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*397%tunMTU)
		sent = append(sent, time.Now())
		src.packets <- p
		want = append(want, p)
	}
	close(src.packets)
	if err := <-done; err != nil {
		t.Fatalf("delayLine: %v", err)
	}
	if len(sink.packets) != len(want) {
		t.Fatalf("%d packets out, want %d", len(sink.packets), len(want))
	}
	for i := range want {
		if !bytes.Equal(sink.packets[i], want[i]) {
			t.Errorf("packet %d: %d bytes starting %x, want %d bytes of %x", i, len(sink.packets[i]), sink.packets[i][:1], len(want[i]), want[i][0])
		}
		// sent[i] is before the line read packet i, so this bound holds.
		if got := sink.at[i].Sub(sent[i]); got < delay {
			t.Errorf("packet %d came out %v after it was sent, want at least %v", i, got, delay)
		}
	}
	if n := dropped.Load(); n != 0 {
		t.Errorf("%d packets dropped with room in the queue", n)
	}
}

// TestDelayLineDropsWhenQueueFull: with the writer stuck and the queue
// full, further packets are dropped and counted, not held or blocking the
// reader; what was queued comes out once the writer moves.
func TestDelayLineDropsWhenQueueFull(t *testing.T) {
	const queue = 3
	reached := make(chan struct{})
	src := &packetSource{packets: make(chan []byte), after: 11, reached: reached}
	sink := &packetSink{gate: make(chan struct{}), entered: make(chan struct{}, 100)}
	var dropped atomic.Int64
	done := make(chan error, 1)
	go func() { done <- delayLine(context.Background(), src, sink, 0, queue, &dropped) }()

	src.packets <- []byte{0}
	<-sink.entered // packet 0 is out of the queue, held by the stuck writer
	for i := 1; i <= 10; i++ {
		src.packets <- []byte{byte(i)}
	}
	<-reached // the reader has queued or dropped all ten
	if n := dropped.Load(); n != 10-queue {
		t.Errorf("%d packets dropped, want %d", n, 10-queue)
	}
	close(src.packets)
	go func() {
		for range sink.entered {
			sink.gate <- struct{}{}
		}
	}()
	sink.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatalf("delayLine: %v", err)
	}
	close(sink.entered)
	var got []byte
	for _, p := range sink.packets {
		got = append(got, p...)
	}
	if want := []byte{0, 1, 2, 3}; !bytes.Equal(got, want) {
		t.Errorf("packets out %v, want %v", got, want)
	}
}

// TestTUNLinkCarriesTCPWithDelay: over the emulated link, a TCP
// connection from one namespace to the other takes at least the round
// trip to open (its SYN and SYN-ACK cross the line), and carries a
// megabyte each way intact.
func TestTUNLinkCarriesTCPWithDelay(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; the emulated link needs root for namespaces and TUN devices")
		}
		t.Skip("the emulated link needs root (namespaces, TUN devices)")
	}
	const rtt = 30 * time.Millisecond
	nsA, nsB := "pbench-test-a", "pbench-test-b"
	for _, ns := range []string{nsA, nsB} {
		ip("netns", "del", ns)
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ip("netns", "del", ns) })
	}
	l, err := startTUNLink(nsA, "pbtest-a", "10.203.78.1", nsB, "pbtest-b", "10.203.78.2", rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if n := l.stop(); n != 0 {
			t.Errorf("%d packets dropped", n)
		}
	}()

	var ln net.Listener
	if err := inNamespace(nsB, func() (err error) { ln, err = net.Listen("tcp", "10.203.78.2:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo
	}()

	var c net.Conn
	start := time.Now()
	err = inNamespace(nsA, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if took := time.Since(start); took < rtt {
		t.Errorf("connect took %v, less than the link's round trip %v", took, rtt)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		c.(*net.TCPConn).CloseWrite()
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("echo over the link: %d bytes back, want %d, equal %v", len(got), len(want), bytes.Equal(got, want))
	}
}
