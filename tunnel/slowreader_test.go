package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/relay"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// tunnelPair returns both ends of a tunnel over loopback TCP.
func tunnelPair(t testing.TB, opts Options) (client, server *Tunnel) {
	c, s := tcpPair(t)
	client, err := New(c, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	server, err = New(s, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// slowTransfer sends size bytes from a fast application through a tunnel
// to one that reads at rate bytes/s, after both relays ran, and returns
// what the slow reader got and how its read ended.
func slowTransfer(t *testing.T, size, rate int) (sum [32]byte, n int64, err error) {
	client, server := tunnelPair(t, testOpts())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Sender side: the application writes size bytes and half-closes.
	senderApp, senderPlain := tcpPair(t)
	// Reader side: the application sends nothing (half-closes at once)
	// and reads slowly.
	readerApp, readerPlain := tcpPair(t)

	opened := make(chan *Stream, 1)
	go func() {
		st, err := server.Accept()
		if err != nil {
			close(opened)
			return
		}
		st.Admit()
		opened <- st
	}()
	cst, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	cst.Admit()
	var sst *Stream
	select {
	case sst = <-opened:
	case <-ctx.Done():
	}
	if sst == nil {
		t.Fatal("no stream accepted")
	}
	relays := make(chan error, 2)
	go func() { _, err := relay.Stream(ctx, senderPlain, cst, nil); relays <- err }()
	go func() { _, err := relay.Stream(ctx, readerPlain, sst, nil); relays <- err }()

	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	go func() {
		senderApp.Write(payload)
		senderApp.CloseWrite()
		io.Copy(io.Discard, senderApp)
	}()
	readerApp.CloseWrite()
	readerApp.SetReadDeadline(time.Now().Add(90 * time.Second)) // a hang fails, not waits

	h := sha256.New()
	buf := make([]byte, 64<<10)
	tick := time.NewTicker(time.Duration(float64(time.Second) * float64(len(buf)) / float64(rate)))
	defer tick.Stop()
	for {
		<-tick.C
		k, rerr := readerApp.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	copy(sum[:], h.Sum(nil))
	for range 2 {
		select {
		case <-relays:
		case <-ctx.Done():
			t.Fatal("relays did not end")
		}
	}
	return sum, n, err
}

// fullWindowAtOnce has a stream grant the whole stream_window as soon as
// it is admitted (no autotuning) until the test ends: the reader's side
// then buffers up to 16 MiB of a transfer.
func fullWindowAtOnce(t *testing.T) {
	old := startStreamWindow
	startStreamWindow = testOpts().StreamWindow
	t.Cleanup(func() { startStreamWindow = old })
}

// A complete transfer arrives whole however slowly the application reads:
// the sender's side finishes (both CLOSE_WRITEs seen, its stream closed)
// while much of 40 MiB still waits in the reader's buffers, and nothing
// may cut the stream while the reader catches up. With the whole window
// at once the stream buffers most of it; with the tuned window, which a
// slow reader keeps small, the rest waits in the sender's buffers.
func TestSlowReaderGetsWholeTransfer(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(map[bool]string{false: "tuned window", true: "full window"}[full], func(t *testing.T) {
			if full {
				fullWindowAtOnce(t)
			}
			const size = 40 << 20
			want := sha256.Sum256(bytes.Repeat([]byte("0123456789abcdef"), size/16))
			sum, n, err := slowTransfer(t, size, 12<<20)
			if err != nil || n != size || sum != want {
				t.Fatalf("slow reader got %d of %d bytes (sha256 match %v), read ended with %v; want all of it and a clean end",
					n, size, sum == want, err)
			}
		})
	}
}

// The same transfer, buffered in the reader's stream (the whole window
// at once), under a stream close timer (what the tunnel had before: 60 s,
// here 300 ms) is cut: the test above can tell.
func TestSlowReaderCutByCloseTimer(t *testing.T) {
	fullWindowAtOnce(t)
	streamCloseTimeout = 300 * time.Millisecond
	defer func() { streamCloseTimeout = 0 }()
	const size = 40 << 20
	_, n, err := slowTransfer(t, size, 12<<20)
	if err == nil && n == size {
		t.Fatal("a close timer shorter than the reader's catch-up did not cut the transfer; the slow-reader test proves nothing")
	}
	if err == nil {
		t.Fatalf("cut transfer (%d of %d bytes) ended cleanly; want a reset", n, size)
	}
}
