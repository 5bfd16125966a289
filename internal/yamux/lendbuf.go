package yamux

import (
	"bufio"
	"io"
	"sync"
)

// Postern: the session's read buffer, lent from a pool only while it holds
// bytes. An idle session waits for its next frame header with no buffer at
// all (over TLS the connection buffers a whole decrypted record itself),
// while a data frame still arrives whole in one buffer, so the receive
// goroutine can hand it straight to a waiting reader (deliver.go) — which
// a small fixed buffer would rule out for every frame larger than it.

// lendSize is the size of a lent buffer: the largest frame tryDeliver
// hands over whole.
const lendSize = 4096

var lendPool = sync.Pool{New: func() any { b := make([]byte, lendSize); return &b }}

// sessionReader is what the receive loop reads frames through.
type sessionReader interface {
	io.Reader
	peeker
}

// lendReader reads from src, buffering only what Peek asks for (and what
// arrives with it). It is used by the receive goroutine alone.
type lendReader struct {
	src  io.Reader
	buf  *[]byte // nil while nothing is buffered
	r, w int     // unread bytes are (*buf)[r:w]
}

func newLendReader(src io.Reader) *lendReader { return &lendReader{src: src} }

// Size is the most Peek returns.
func (l *lendReader) Size() int { return lendSize }

// Read returns buffered bytes first; with none, it reads from src
// directly, holding no buffer while it waits.
func (l *lendReader) Read(p []byte) (int, error) {
	if l.buf == nil {
		return l.src.Read(p)
	}
	n := copy(p, (*l.buf)[l.r:l.w])
	l.r += n
	l.releaseIfEmpty()
	return n, nil
}

// Peek returns the next n bytes without consuming them, reading from src
// as needed. The bytes are valid until the next Read, Peek or Discard.
func (l *lendReader) Peek(n int) ([]byte, error) {
	if n > lendSize {
		return nil, bufio.ErrBufferFull
	}
	if l.buf == nil {
		l.buf = lendPool.Get().(*[]byte)
		l.r, l.w = 0, 0
	}
	buf := *l.buf
	if l.r+n > len(buf) { // make room at the end
		l.w = copy(buf, buf[l.r:l.w])
		l.r = 0
	}
	for l.w-l.r < n {
		m, err := l.src.Read(buf[l.w:])
		l.w += m
		if err != nil {
			if l.w-l.r >= n {
				break
			}
			p := buf[l.r:l.w]
			if len(p) == 0 {
				l.releaseIfEmpty()
			}
			return p, err
		}
	}
	return buf[l.r : l.r+n], nil
}

// Discard skips the next n bytes, buffered or not.
func (l *lendReader) Discard(n int) (int, error) {
	done := 0
	if l.buf != nil {
		done = l.w - l.r
		if n < done {
			done = n
		}
		l.r += done
		l.releaseIfEmpty()
	}
	if done < n {
		m, err := io.CopyN(io.Discard, l.src, int64(n-done))
		done += int(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// releaseIfEmpty returns the buffer to the pool once everything in it was
// consumed.
func (l *lendReader) releaseIfEmpty() {
	if l.buf != nil && l.r == l.w {
		lendPool.Put(l.buf)
		l.buf = nil
	}
}

// buffered reports how many unread bytes the reader holds (for tests).
func (l *lendReader) buffered() int {
	if l.buf == nil {
		return 0
	}
	return l.w - l.r
}

// newSessionReader is the session's read buffer for ReadBufferSize size:
// a lent one for LendReadBuffer (negative), else a bufio.Reader.
func newSessionReader(src io.Reader, size int) sessionReader {
	if size == LendReadBuffer {
		return newLendReader(src)
	}
	return bufio.NewReaderSize(src, size)
}

// LendReadBuffer, as Config.ReadBufferSize, gives the session a read
// buffer lent from a pool only while it holds bytes (lendbuf.go): an idle
// session holds none, and a data frame of up to 4 KiB still arrives whole
// for direct delivery.
const LendReadBuffer = -1
