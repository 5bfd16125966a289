package yamux

// Postern: tests of idle readers (held.go).

import (
	"io"
	"testing"
	"time"
)

// armed arms an idle reader on st and returns a channel that gets a value
// when its wake-up runs; it fails if st is readable already.
func armed(t *testing.T, st *Stream) (<-chan struct{}, *func()) {
	t.Helper()
	woken := make(chan struct{}, 2)
	wake := func() { woken <- struct{}{} }
	if st.WaitDeliverFunc(&wake) {
		t.Fatal("WaitDeliverFunc: ready on a stream with nothing to read")
	}
	return woken, &wake
}

func waitWoken(t *testing.T, woken <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatalf("idle reader not woken by %s", what)
	}
}

func TestIdleReaderWokenByDataEndAndDeadline(t *testing.T) {
	client, server := posternPair(t, testConfNoKeepAlive())
	c, s := openAccept(t, client, server)

	// Buffered data (no deliver function: nothing is delivered) wakes it,
	// and a reader that has data is ready. The wake-up of the frame
	// openAccept read can come first: the receive loop runs it after
	// unlocking the buffer, so the read may take the byte, and the reader
	// go idle again, before it runs. Such a wake-up finds nothing to read
	// and the reader goes back to waiting.
	woken, wake := armed(t, s)
	c.Write([]byte("hello"))
	for ready := false; !ready; {
		waitWoken(t, woken, "data")
		ready = s.WaitDeliverFunc(wake)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}

	// A deadline wakes it, and a reader with a deadline reads as usual.
	woken, wake = armed(t, s)
	s.SetReadDeadline(time.Now())
	waitWoken(t, woken, "a read deadline")
	if !s.WaitDeliverFunc(wake) {
		t.Fatal("WaitDeliverFunc: not ready with a read deadline set")
	}
	if _, err := s.Read(buf); err != ErrTimeout {
		t.Fatalf("read after the deadline: %v, want ErrTimeout", err)
	}
	s.SetReadDeadline(time.Time{})

	// Data delivered in full does not wake it; the peer's FIN does.
	s.SetDeliver(func(p []byte) int { return len(p) })
	woken, wake = armed(t, s)
	c.Write([]byte("taken"))
	c.Close()
	waitWoken(t, woken, "FIN")
	select {
	case <-woken:
		t.Fatal("woken twice")
	default:
	}
	if !s.WaitDeliverFunc(wake) {
		t.Fatal("WaitDeliverFunc: not ready after FIN")
	}
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after FIN: %d, %v; want EOF (the data was delivered)", n, err)
	}
}

func TestIdleReaderWokenBySessionEnd(t *testing.T) {
	client, server := posternPair(t, testConfNoKeepAlive())
	_, s := openAccept(t, client, server)
	woken, _ := armed(t, s)
	client.Close()
	waitWoken(t, woken, "the session's end")
}
