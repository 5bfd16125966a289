//go:build unix

package tunnel

import (
	"bytes"
	"testing"
	"time"
)

// Over TLS, a small data frame that arrives while the reader waits is
// handed to it by the tunnel's receive goroutine (direct delivery), not
// buffered: the tunnel's read buffer, lent only while it holds a frame,
// still takes a whole frame.
func TestSmallFramesDeliveredOverTLS(t *testing.T) {
	client, server := tlsTunnelPair(t, testOpts())
	cst, sst := admittedStreams(t, client, server)

	delivered := make(chan []byte, 16)
	sst.SetDeliver(func(p []byte) int {
		delivered <- bytes.Clone(p)
		return len(p)
	})
	waited := make(chan error, 1)
	go func() { waited <- sst.WaitDeliver() }()

	msg := bytes.Repeat([]byte("query "), 100) // 600 bytes: more than a frame header, less than 4 KiB
	deadline := time.After(10 * time.Second)
	for range 3 {
		if _, err := cst.Write(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-delivered:
			if !bytes.Equal(got, msg) {
				t.Fatalf("delivered %d bytes, want the %d written", len(got), len(msg))
			}
		case err := <-waited:
			t.Fatalf("the frame was buffered and the reader woken (err %v), not delivered", err)
		case <-deadline:
			t.Fatal("nothing delivered within 10s")
		}
	}
}
