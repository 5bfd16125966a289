package tunnel

import (
	"context"
	"io"
	"testing"
)

// frameLoop serves the same encoded frames over and over.
type frameLoop struct {
	wire []byte
	off  int
}

func (l *frameLoop) Read(p []byte) (int, error) {
	n := copy(p, l.wire[l.off:])
	l.off = (l.off + n) % len(l.wire)
	return n, nil
}

// BenchmarkFrameReader decodes 64 KiB DATA frames, the size a sender
// produces. Steady state allocates nothing: the buffer comes from the pool.
func BenchmarkFrameReader(b *testing.B) {
	payload := make([]byte, chunkSize)
	var wire []byte
	for i := 0; i < 4; i++ {
		wire = append(wire, encodeFrame(FrameData, payload)...)
	}
	fr := newFrameReader(&frameLoop{wire: wire})
	defer fr.Release()
	b.SetBytes(chunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := fr.Next()
		if err != nil || len(f.Payload) != chunkSize {
			b.Fatalf("frame %d: %d bytes, %v", i, len(f.Payload), err)
		}
	}
}

// BenchmarkRelay moves data one way through two relays joined by a yamux
// stream over loopback TCP: application → relay → yamux → relay →
// application, as between two agents (without TLS).
func BenchmarkRelay(b *testing.B) {
	client, server := sessionPair(b)
	opened, accepted := streamPair(b, client, server)
	srcApp, srcPlain := tcpPair(b)
	dstApp, dstPlain := tcpPair(b)
	results := make(chan error, 2)
	go func() { _, err := Relay(context.Background(), srcPlain, opened, nil); results <- err }()
	go func() { _, err := Relay(context.Background(), dstPlain, accepted, nil); results <- err }()
	// Only one direction carries data; the other ends at once.
	if err := dstApp.CloseWrite(); err != nil {
		b.Fatal(err)
	}

	chunk := make([]byte, chunkSize)
	b.SetBytes(chunkSize)
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
	if err != nil || n != int64(b.N)*chunkSize {
		b.Fatalf("received %d bytes, %v; want %d", n, err, int64(b.N)*chunkSize)
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
