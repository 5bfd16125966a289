package server

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSilentFloodSustained: six addresses dial silent connections as
// fast as the server closes them, for as long as the test runs, so the
// listen backlog is never empty of them; a partner that dials once the
// flood is in full swing still gets its tunnel at the first attempt or
// soon after (the accept loop keeps up: evicting a silent connection
// costs it one look into that connection's socket).
func TestSilentFloodSustained(t *testing.T) { silentFloodSustained(t, false) }

// silentFloodSustained is TestSilentFloodSustained, with the server's
// DeferAccept as given.
func silentFloodSustained(t *testing.T, deferAccept bool) {
	ts := startServer(t, func(s *Server) {
		s.MaxHandshakes = 16
		s.MaxHandshakesPerAddress = 4
		s.DeferAccept = deferAccept
	})
	stop := make(chan struct{})
	var dialers, readers sync.WaitGroup
	var dials atomic.Int64
	for i := range 6 {
		src := fmt.Sprintf("127.0.4.%d", i+1)
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
			for range 200000 { // bounded: at most 200,000 dials per address
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", ts.addr)
				if err != nil {
					continue
				}
				dials.Add(1)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				readers.Add(1)
				go func() {
					defer readers.Done()
					io.Copy(io.Discard, c) // until the server closes it
					c.Close()
				}()
			}
		}()
	}
	defer func() {
		close(stop)
		dialers.Wait()
		readers.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for dials.Load() < 2000 {
		if time.Now().After(deadline) {
			t.Fatalf("the flood made only %d connections in 10s", dials.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	start := time.Now()
	var err error
	for attempt := 1; attempt <= 20 && time.Since(start) < 3*time.Second; attempt++ {
		if err = ts.tunnel(t, "127.0.0.1"); err == nil {
			t.Logf("partner's tunnel up after %d attempts, %s, beside %d silent connections", attempt, time.Since(start).Round(time.Millisecond), dials.Load())
			return
		}
	}
	t.Fatalf("no tunnel within 3s beside a sustained flood of silent connections: %v", err)
}
