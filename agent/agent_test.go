package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestRoundTrip: bytes go both ways through a forward, two services share
// one tunnel, and one agent runs many forwards.
func TestRoundTrip(t *testing.T) {
	echoLn, upperLn := testnet.Listen(t), testnet.Listen(t)
	testnet.Serve(t, echoLn, testnet.Echo)
	testnet.Serve(t, upperLn, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
	})
	services := serviceTOML("echo", echoLn.Addr().String(), "dns:site-a.test") +
		serviceTOML("upper", upperLn.Addr().String(), "cn:site-a")
	names := []string{"echo", "upper"}
	for i := 0; i < 8; i++ {
		names = append(names, "echo")
	}
	_, site := startPair(t, services, names...)
	addrs := site.ForwardAddrs()

	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testnet.Dial(t, addr.String())
			msg := []byte(fmt.Sprintf("hello %d from the legacy app", i))
			if _, err := c.Write(msg); err != nil {
				t.Error(err)
				return
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("forward %d: %v", i, err)
				return
			}
			want := msg
			if names[i] == "upper" {
				want = bytes.ToUpper(msg)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("forward %d (%s): got %q, want %q", i, names[i], got, want)
			}
		}()
	}
	wg.Wait()
}

// TestHalfClose: the app sends a request and shuts its write side; the
// service reads to EOF, then answers; the app receives the whole answer.
func TestHalfClose(t *testing.T) {
	answer := bytes.Repeat([]byte("answer "), 200_000)
	ln := testnet.Listen(t)
	gotRequest := make(chan []byte, 1)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		req, err := io.ReadAll(c) // until the app's half-close arrives
		if err != nil {
			return
		}
		gotRequest <- req
		c.Write(answer)
	})
	_, site := startPair(t, serviceTOML("svc", ln.Addr().String(), "*"), "svc")
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.Write([]byte("the whole request"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if string(<-gotRequest) != "the whole request" {
		t.Fatal("service did not get the request")
	}
	if !bytes.Equal(got, answer) {
		t.Fatalf("got %d bytes of answer, want %d", len(got), len(answer))
	}
}

// TestIntegrity: 200 concurrent streams move 1–8 MiB of random data in
// each direction; SHA-256 matches at both ends.
func TestIntegrity(t *testing.T) {
	streams := 200
	if testing.Short() {
		streams = 20
	}
	// The service hashes what it receives and sends back its own random
	// data, whose hash it reports.
	type result struct{ recv, sent [32]byte }
	results := make(chan result, streams)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		var seed [8]byte
		if _, err := io.ReadFull(c, seed[:]); err != nil {
			return
		}
		rng := rand.NewChaCha8([32]byte(append(seed[:], make([]byte, 24)...)))
		size := 1<<20 + rng.Uint64()%(7<<20)
		sent := sha256.New()
		done := make(chan [32]byte)
		go func() {
			h := sha256.New()
			io.Copy(h, c)
			done <- [32]byte(h.Sum(nil))
		}()
		io.CopyN(io.MultiWriter(c, sent), rng, int64(size))
		c.CloseWrite()
		results <- result{recv: <-done, sent: [32]byte(sent.Sum(nil))}
	})
	_, site := startPair(t, serviceTOML("bulk", ln.Addr().String(), "*"), "bulk")
	addr := site.ForwardAddrs()[0]

	var wg sync.WaitGroup
	sentByApp := make(chan [32]byte, streams)
	recvByApp := make(chan [32]byte, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testnet.Dial(t, addr.String())
			var seed [8]byte
			seed[0], seed[1] = byte(i), byte(i>>8)
			c.Write(seed[:])
			rng := rand.NewChaCha8([32]byte{byte(i), 1})
			size := 1<<20 + rng.Uint64()%(7<<20)
			got := make(chan [32]byte)
			go func() {
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					t.Errorf("stream %d: read: %v", i, err)
				}
				got <- [32]byte(h.Sum(nil))
			}()
			h := sha256.New()
			if _, err := io.CopyN(io.MultiWriter(c, h), rng, int64(size)); err != nil {
				t.Errorf("stream %d: write: %v", i, err)
			}
			c.CloseWrite()
			sentByApp <- [32]byte(h.Sum(nil))
			recvByApp <- <-got
		}()
	}
	wg.Wait()
	close(sentByApp)
	close(recvByApp)
	// Streams finish in any order: compare the sets of hashes.
	appSent, appRecv := map[[32]byte]int{}, map[[32]byte]int{}
	for h := range sentByApp {
		appSent[h]++
	}
	for h := range recvByApp {
		appRecv[h]++
	}
	for i := 0; i < streams; i++ {
		r := <-results
		if appSent[r.recv] == 0 {
			t.Fatalf("the service received data whose hash no app sent")
		}
		appSent[r.recv]--
		if appRecv[r.sent] == 0 {
			t.Fatalf("an app received data whose hash differs from what the service sent")
		}
		appRecv[r.sent]--
	}
}

// TestAbortOnTunnelLoss: cutting the tunnel mid-transfer resets the app's
// connection; it must not look like a clean end.
func TestAbortOnTunnelLoss(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	started := make(chan struct{}, 1)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		chunk := make([]byte, 32<<10)
		started <- struct{}{}
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	var cuts connTracker
	hub := startWith(t, dir, "hub", hubTOML(p, serviceTOML("stream", ln.Addr().String(), "*")), Options{Listen: cuts.listen})
	site := start(t, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String(), "stream"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	<-started
	buf := make([]byte, 64<<10)
	if _, err := io.ReadAtLeast(c, buf, 1); err != nil {
		t.Fatal(err)
	}
	cuts.cut()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	err := testnet.Drain(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read ended with %v, want connection reset", err)
	}
	site.log.WaitFor(t, 5*time.Second, "stream reset", "via=hub", "err=")
}

// TestAbortOnTargetReset: a target that resets its connection resets the
// app's connection too.
func TestAbortOnTargetReset(t *testing.T) {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		c.Write([]byte("partial answer"))
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.SetLinger(0)
		c.Close()
	})
	_, site := startPair(t, serviceTOML("svc", ln.Addr().String(), "*"), "svc")
	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	err := testnet.Drain(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read ended with %v, want connection reset", err)
	}
}
