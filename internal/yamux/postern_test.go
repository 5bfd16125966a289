package yamux

// Postern: tests of the changes Postern made (Admit, Reset, Discard,
// Budget, control frames ahead of data).

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func posternPair(t *testing.T, server *Config) (*Session, *Session) {
	t.Helper()
	c, s := testConnTLS(t)
	client := testConfNoKeepAlive()
	client.MaxStreamWindowSize = 4 << 20
	client.ConnectionWriteTimeout = 5 * time.Second
	server.ConnectionWriteTimeout = 5 * time.Second
	return testClientServerConfig(t, c, s, client, server)
}

func openAccept(t *testing.T, client, server *Session) (*Stream, *Stream) {
	t.Helper()
	c, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{1})
	s, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(s, one); err != nil {
		t.Fatal(err)
	}
	return c, s
}

// waitSendWindow waits until the opener's send window reaches want.
func waitSendWindow(t *testing.T, st *Stream, want uint32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for st.sendWindowNow() != want {
		if time.Now().After(deadline) {
			t.Fatalf("send window %d, want %d", st.sendWindowNow(), want)
		}
		select {
		case <-st.sendNotifyCh:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *Stream) sendWindowNow() uint32 { return atomic.LoadUint32(&s.sendWindow) }

func TestAdmitGrowsWindowOnlyWhenAdmitted(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = 4 << 20
	conf.AdmitStreams = true
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	// One byte was read: without admission the window stays at 256 KiB
	// (less the byte, which the reader has not yet given back).
	if w := c.sendWindowNow(); w > initialStreamWindow {
		t.Fatalf("unadmitted stream: peer's send window %d, want at most %d", w, initialStreamWindow)
	}
	if err := s.Admit(); err != nil {
		t.Fatal(err)
	}
	waitSendWindow(t, c, 4<<20)
}

func TestResetIsSeenAsResetAndFreesTheStream(t *testing.T) {
	conf := testConfNoKeepAlive()
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	c.Write(bytes.Repeat([]byte("x"), 64<<10)) // buffered, unread
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if n := server.NumStreams(); n != 0 {
		t.Errorf("server holds %d streams after Reset, want 0", n)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("local read after Reset: %v, want ErrConnectionReset", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrConnectionReset) {
		t.Errorf("peer read after Reset: %v, want ErrConnectionReset", err)
	}
}

func TestBudgetResetsStreamOverIt(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = 4 << 20
	conf.AdmitStreams = true
	conf.Buffer = NewBudget(1<<20, NewBudget(8<<20, nil))
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	s.Admit()
	waitSendWindow(t, c, 4<<20)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(bytes.Repeat([]byte("x"), 2<<20)) // nobody reads: over the budget
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrConnectionReset) {
		t.Fatalf("writer's read: %v, want ErrConnectionReset (stream over budget)", err)
	}
	if u := conf.Buffer.Used(); u != 0 {
		t.Errorf("budget holds %d bytes after the reset, want 0", u)
	}
	if u := conf.Buffer.parent.Used(); u != 0 {
		t.Errorf("parent budget holds %d bytes after the reset, want 0", u)
	}
}

func TestDiscardKeepsAnswerDropsData(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.Buffer = NewBudget(8<<20, nil)
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	s.Write([]byte("no"))
	s.Close()
	s.Discard()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(bytes.Repeat([]byte("x"), 128<<10))
	if u := conf.Buffer.Used(); u != 0 {
		t.Errorf("discarded stream holds %d bytes, want 0", u)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "no" {
		t.Errorf("opener read %q, %v; want the answer \"no\" and EOF", got, err)
	}
}

// TestDataRoundTripDoesNotAllocate: a small message and its answer, each
// one DATA frame, allocate nothing in either session once the streams
// are open (the receive loop reused to allocate a reader per frame).
func TestDataRoundTripDoesNotAllocate(t *testing.T) {
	clientConn, serverConn := testConnTCP(t)
	conf := func() *Config {
		c := testConfNoKeepAlive()
		c.DirectWrite = true // as Postern runs it; queued writes allocate their hand-off
		return c
	}
	client, server := testClientServerConfig(t, clientConn, serverConn, conf(), conf())
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ss, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	echoed := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(ss, buf); err != nil {
				echoed <- err
				return
			}
			if _, err := ss.Write(buf); err != nil {
				echoed <- err
				return
			}
		}
	}()
	msg, buf := make([]byte, 64), make([]byte, 64)
	roundTrip := func() {
		if _, err := cs.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cs, buf); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip()
	if allocs := testing.AllocsPerRun(200, roundTrip); allocs != 0 {
		t.Errorf("a round trip allocates %.1f times, want 0", allocs)
	}
	select {
	case err := <-echoed:
		t.Fatalf("echo: %v", err)
	default:
	}
}

// TestDeadlinesDoNotAllocate: setting and clearing a stream's deadlines
// allocates nothing, nor does a read or write whose deadline has passed,
// which returns ErrTimeout at once (a tunnel's stream has its read
// deadline set and cleared while it opens, and set to now at its end).
func TestDeadlinesDoNotAllocate(t *testing.T) {
	client, server := testClientServer(t)
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := server.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	later, earlier := time.Now().Add(time.Hour), time.Now().Add(-time.Second)
	if allocs := testing.AllocsPerRun(100, func() {
		cs.SetReadDeadline(later)
		cs.SetWriteDeadline(later)
		cs.SetDeadline(time.Time{})
	}); allocs != 0 {
		t.Errorf("setting and clearing deadlines allocates %.1f times, want 0", allocs)
	}
	buf := make([]byte, 1)
	cs.SetReadDeadline(earlier)
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := cs.Read(buf); err != ErrTimeout {
			t.Fatalf("read past its deadline: %v, want ErrTimeout", err)
		}
	}); allocs != 0 {
		t.Errorf("a read past its deadline allocates %.1f times, want 0", allocs)
	}
	// The write side waits only once the window is used up.
	cs.SetWriteDeadline(earlier)
	if _, err := cs.Write(make([]byte, initialStreamWindow+1)); err != ErrTimeout {
		t.Fatalf("write past its deadline with the window used up: %v, want ErrTimeout", err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := cs.Write(buf); err != ErrTimeout {
			t.Fatalf("write past its deadline: %v, want ErrTimeout", err)
		}
	}); allocs != 0 {
		t.Errorf("a write past its deadline allocates %.1f times, want 0", allocs)
	}
}

// TestReserveAtLimitReusesBuffer: a stream buffer that is as large as the
// window may get, with its unread bytes past the middle, makes room for
// more by moving them to the front of the same array, keeping their order
// and its budget, instead of allocating a new array of the same size.
func TestReserveAtLimitReusesBuffer(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.Buffer = NewBudget(8<<20, nil)
	client, server := posternPair(t, conf)
	_, s := openAccept(t, client, server)
	limit := int(conf.MaxStreamWindowSize)
	data := make([]byte, limit)
	for i := range data {
		data[i] = byte(i * 7)
	}

	s.recvLock.Lock()
	defer s.recvLock.Unlock()
	if !s.reserve(limit) {
		t.Fatal("reserve of the whole window refused")
	}
	s.recvBuf.Write(data)
	base := unsafe.SliceData(s.recvBuf.Bytes())
	held := s.held
	s.recvBuf.Next(limit / 4) // the reader took a quarter: three quarters unread
	if !s.reserve(limit / 8) {
		t.Fatal("reserve of an eighth refused with a quarter free")
	}
	if got := unsafe.SliceData(s.recvBuf.Bytes()); got != base {
		t.Error("a new array was allocated; want the unread bytes moved to the front of the same one")
	}
	if s.held != held || conf.Buffer.Used() != held {
		t.Errorf("budget: held %d, used %d; want %d as before", s.held, conf.Buffer.Used(), held)
	}
	if !bytes.Equal(s.recvBuf.Bytes(), data[limit/4:]) {
		t.Error("the unread bytes changed when moved")
	}
	if s.recvBuf.Available() < limit/8 {
		t.Errorf("room after reserve: %d, want at least %d", s.recvBuf.Available(), limit/8)
	}
}
