package tunnel

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// slowPipe carries bytes from src to dst at about rate bytes/s, in small
// pieces, until either side ends.
func slowPipe(src, dst *net.TCPConn, rate int) {
	buf := make([]byte, 8<<10)
	per := time.Duration(float64(time.Second) * float64(len(buf)) / float64(rate))
	tick := time.NewTicker(per)
	defer tick.Stop()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			<-tick.C
		}
		if err != nil {
			dst.CloseWrite()
			return
		}
	}
}

// slowTunnelPair is tunnelPair over a link of about rate bytes/s with
// small socket buffers: a slow, full WAN link in miniature.
func slowTunnelPair(t *testing.T, opts Options, rate int) (client, server *Tunnel) {
	a1, a2 := tcpPair(t)
	b1, b2 := tcpPair(t)
	for _, c := range []*net.TCPConn{a1, a2, b1, b2} {
		c.SetReadBuffer(16 << 10)
		c.SetWriteBuffer(16 << 10)
	}
	go slowPipe(a2, b2, rate)
	go slowPipe(b2, a2, rate)
	client, err := New(a1, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	server, err = New(b1, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A healthy tunnel on a slow link that its streams keep full survives:
// keepalive_timeout detects a dead peer (a ping unanswered), it does not
// limit how long a write may wait in line (write_timeout does). Sixteen
// streams push 6 MiB through a link of about 1 MiB/s, so a frame waits
// in line for seconds, longer than keepalive_timeout.
func TestSaturatedLinkKeepsTunnel(t *testing.T) {
	opts := testOpts()
	opts.KeepaliveInterval = 100 * time.Millisecond
	opts.KeepaliveTimeout = time.Second
	opts.WriteTimeout = time.Minute
	client, server := slowTunnelPair(t, opts, 1<<20)

	const streams, each = 16, 384 << 10
	got := make(chan int64, streams)
	go func() {
		for range streams {
			st, err := server.Accept()
			if err != nil {
				return
			}
			st.Admit()
			go func() {
				n, _ := io.Copy(io.Discard, st)
				st.Close()
				got <- n
			}()
		}
	}()
	payload := bytes.Repeat([]byte("s"), each)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := client.Open()
			if err != nil {
				errs <- err
				return
			}
			st.Admit()
			if _, err := st.Write(payload); err != nil {
				errs <- err
				return
			}
			st.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("stream write on a saturated link: %v (tunnel closed: %v, keepalive failed: %v)",
			err, client.Closed(), client.KeepaliveFailed())
	}
	deadline := time.After(time.Minute)
	for range streams {
		select {
		case n := <-got:
			if n != each {
				t.Fatalf("a stream delivered %d of %d bytes", n, each)
			}
		case <-deadline:
			t.Fatal("streams did not finish")
		}
	}
	if client.Closed() || server.Closed() {
		t.Fatal("tunnel closed under load")
	}
}
