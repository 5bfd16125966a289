package yamux

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// chunky returns at most a random few bytes per Read, as a TLS connection
// returns one record at a time.
type chunky struct {
	data []byte
	rng  *rand.Rand
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := minInt(minInt(len(p), 1+c.rng.IntN(700)), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// Postern: whatever mix of Read, Peek and Discard the receive loop makes,
// a lendReader yields the source's bytes in order, and holds a buffer only
// while it holds unread bytes.
func TestLendReaderYieldsSourceInOrder(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		src := make([]byte, 64<<10)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		l := newLendReader(&chunky{data: src, rng: rng})
		var got []byte
		for len(got) < len(src) {
			left := len(src) - len(got)
			switch rng.IntN(3) {
			case 0: // a header or a body read straight into the caller's buffer
				p := make([]byte, minInt(1+rng.IntN(9000), left))
				n, err := io.ReadFull(l, p)
				if err != nil {
					t.Fatalf("seed %d: read: %v", seed, err)
				}
				got = append(got, p[:n]...)
			case 1: // a frame offered for delivery
				n := minInt(1+rng.IntN(lendSize), left)
				p, err := l.Peek(n)
				if err != nil || len(p) != n {
					t.Fatalf("seed %d: peek %d: %d bytes, %v", seed, n, len(p), err)
				}
				got = append(got, p...)
				if d, err := l.Discard(n); d != n || err != nil {
					t.Fatalf("seed %d: discard %d: %d, %v", seed, n, d, err)
				}
			case 2: // a frame dropped unread
				n := minInt(1+rng.IntN(9000), left)
				if d, err := l.Discard(n); d != n || err != nil {
					t.Fatalf("seed %d: discard %d: %d, %v", seed, n, d, err)
				}
				got = append(got, src[len(got):len(got)+n]...)
			}
			if !bytes.Equal(got, src[:len(got)]) {
				t.Fatalf("seed %d: bytes differ from the source after %d", seed, len(got))
			}
			if (l.buf != nil) != (l.buffered() > 0) {
				t.Fatalf("seed %d: holds a buffer: %v, with %d bytes unread", seed, l.buf != nil, l.buffered())
			}
		}
		if _, err := l.Peek(1); err != io.EOF {
			t.Fatalf("seed %d: peek at the end: %v, want EOF", seed, err)
		}
		if l.buf != nil {
			t.Fatalf("seed %d: a buffer held at the end", seed)
		}
	}
	if _, err := newLendReader(bytes.NewReader(nil)).Peek(lendSize + 1); err == nil {
		t.Fatal("a peek past the buffer's size succeeded")
	}
}
