package wire

import (
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
	payload := make([]byte, ChunkSize)
	var frames []byte
	for i := 0; i < 4; i++ {
		frames = append(frames, encodeFrame(FrameData, payload)...)
	}
	fr := NewFrameReader(&frameLoop{wire: frames})
	defer fr.Release()
	b.SetBytes(ChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := fr.Next()
		if err != nil || len(f.Payload) != ChunkSize {
			b.Fatalf("frame %d: %d bytes, %v", i, len(f.Payload), err)
		}
	}
}
