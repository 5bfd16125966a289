package yamux

// Postern: tests of receive-window autotuning (autotune.go).

import (
	"io"
	"math"
	"testing"
	"time"
)

func TestWindowTooSmall(t *testing.T) {
	const w = 1 << 20
	ms := time.Millisecond
	for _, c := range []struct {
		consumed     uint32
		elapsed, rtt time.Duration
		want         bool
	}{
		{w / 2, 19 * ms, 10 * ms, true},  // half a window in under two round trips
		{w / 2, 21 * ms, 10 * ms, false}, // in over two: the reader held it
		{w, 39 * ms, 10 * ms, true},      // a whole window in under four
		{w, 41 * ms, 10 * ms, false},
		{w / 2, time.Nanosecond, 0, false}, // no estimate yet: nothing grows
	} {
		if got := windowTooSmall(w, c.consumed, c.elapsed, c.rtt); got != c.want {
			t.Errorf("window %d, consumed %d in %v, round trip %v: too small %v, want %v",
				w, c.consumed, c.elapsed, c.rtt, got, c.want)
		}
	}
}

func autotuneConf() *Config {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = 16 << 20
	conf.StartStreamWindowSize = 1 << 20
	return conf
}

// fixRTT gives the session a round-trip estimate that never goes stale,
// so no probe replaces it during the test.
func fixRTT(s *Session, rtt time.Duration) {
	s.rtt.smoothed.Store(int64(rtt))
	s.rtt.at.Store(math.MaxInt64 / 2)
}

// consume has the peer write n bytes on a new stream and this side read
// them all, through Read or through direct delivery, and returns the
// accepted stream.
func consume(t *testing.T, client, server *Session, n int, deliver bool) *Stream {
	t.Helper()
	c, s := openAccept(t, client, server)
	chunk := 64 << 10
	if deliver {
		chunk = 4000 // small frames are delivered whole
		s.SetDeliver(func(p []byte) int { return len(p) })
	}
	go func() {
		buf := make([]byte, chunk)
		for sent := 0; sent < n; sent += chunk {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if deliver {
			if err := s.WaitDeliver(); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
		_, err := s.Read(buf)
		if err == io.EOF {
			return s
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func windowOf(s *Stream) uint32 {
	s.recvLock.Lock()
	defer s.recvLock.Unlock()
	return s.window
}

// A stream whose peer fills half its window within two round trips (a
// long round trip here) doubles it until MaxStreamWindowSize; one whose
// reader takes longer than that per half window (a round trip of a
// nanosecond) keeps the window it started with. By Read and by direct
// delivery alike.
func TestWindowGrowsOnlyWhileThePeerIsHeldByIt(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		want uint32
	}{
		{time.Hour, 16 << 20},
		{time.Nanosecond, 1 << 20},
	} {
		for _, deliver := range []bool{false, true} {
			client, server := posternPair(t, autotuneConf())
			fixRTT(server, c.rtt)
			s := consume(t, client, server, 24<<20, deliver)
			if w := windowOf(s); w != c.want {
				t.Errorf("round trip %v, deliver %v: window %d after 24 MiB read at once, want %d", c.rtt, deliver, w, c.want)
			}
		}
	}
}

// Without a round-trip estimate nothing grows (TestWindowTooSmall), and
// the first stream that would grow its window starts a ping that measures
// one.
func TestWindowWithoutRoundTripAsksForOne(t *testing.T) {
	client, server := posternPair(t, autotuneConf())
	if server.rtt.smoothed.Load() != 0 {
		t.Fatal("a new session has a round-trip estimate")
	}
	consume(t, client, server, 2<<20, false)
	if server.rtt.smoothed.Load() == 0 && !server.rtt.probing.Load() {
		t.Error("window updates with no round-trip estimate started no ping to measure one")
	}
}

// A stream nobody reads holds at most its start window, not
// MaxStreamWindowSize: the peer's writes stop there.
func TestUnreadStreamHoldsTheStartWindow(t *testing.T) {
	client, server := posternPair(t, autotuneConf())
	fixRTT(server, time.Hour)
	c, s := openAccept(t, client, server)
	go func() {
		c.Write(make([]byte, 8<<20))
	}()
	waitSendWindow(t, c, 0)
	// openAccept read one byte of the window.
	if n := s.Buffered(); n != 1<<20-1 {
		t.Errorf("%d bytes buffered, want the start window less one, %d", n, 1<<20-1)
	}
}

// Ping notes the round trip it measured.
func TestPingNotesRoundTrip(t *testing.T) {
	client, _ := posternPair(t, autotuneConf())
	rtt, err := client.Ping()
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(client.rtt.smoothed.Load()); got != rtt {
		t.Errorf("estimate %v after the first ping, want its %v", got, rtt)
	}
	client.noteRTT(rtt + 8*time.Millisecond)
	if got := time.Duration(client.rtt.smoothed.Load()); got != rtt+time.Millisecond {
		t.Errorf("estimate %v after a sample 8ms longer, want %v (1/8 of the difference)", got, rtt+time.Millisecond)
	}
}

// The start window is never above MaxStreamWindowSize (a stream_window
// under 1 MiB) nor below the protocol's initial window; 0 is upstream's
// whole window at once.
func TestStartWindowBounds(t *testing.T) {
	for _, c := range []struct{ start, max, want uint32 }{
		{1 << 20, 16 << 20, 1 << 20},
		{1 << 20, 256 << 10, 256 << 10},
		{0, 16 << 20, 16 << 20},
		{64 << 10, 16 << 20, initialStreamWindow},
	} {
		conf := Config{StartStreamWindowSize: c.start, MaxStreamWindowSize: c.max}
		if got := conf.startWindow(); got != c.want {
			t.Errorf("start %d, max %d: start window %d, want %d", c.start, c.max, got, c.want)
		}
	}
}
