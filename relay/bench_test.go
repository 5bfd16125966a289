package relay

import (
	"context"
	"io"
	"testing"

	"github.com/postern-tunnel/postern/wire"
)

// BenchmarkRelay moves data one way through two relays joined by a yamux
// stream over loopback TCP: application → relay → yamux → relay →
// application, as between two agents (without TLS).
func BenchmarkRelay(b *testing.B) {
	client, server := sessionPair(b)
	opened, accepted := streamPair(b, client, server)
	srcApp, srcPlain := tcpPair(b)
	dstApp, dstPlain := tcpPair(b)
	results := make(chan error, 2)
	go func() { _, err := Stream(context.Background(), srcPlain, opened, nil); results <- err }()
	go func() { _, err := Stream(context.Background(), dstPlain, accepted, nil); results <- err }()
	// Only one direction carries data; the other ends at once.
	if err := dstApp.CloseWrite(); err != nil {
		b.Fatal(err)
	}

	chunk := make([]byte, wire.ChunkSize)
	b.SetBytes(wire.ChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	writeErr := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := srcApp.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- srcApp.CloseWrite()
	}()
	n, err := io.Copy(io.Discard, dstApp)
	b.StopTimer()
	if err != nil || n != int64(b.N)*wire.ChunkSize {
		b.Fatalf("received %d bytes, %v; want %d", n, err, int64(b.N)*wire.ChunkSize)
	}
	if err := <-writeErr; err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, srcApp); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			b.Fatalf("Relay: %v", err)
		}
	}
}
