package loadgen

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != 1000 || h.Min() != time.Microsecond || h.Max() != time.Millisecond {
		t.Fatalf("count %d min %s max %s", h.Count(), h.Min(), h.Max())
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}, {0, time.Microsecond}} {
		got := h.Quantile(tc.q)
		if d := got - tc.want; d < -tc.want/50 || d > tc.want/50 {
			t.Errorf("Quantile(%v) = %s, want %s ±2%%", tc.q, got, tc.want)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, empty Histogram
	a.Record(10 * time.Millisecond)
	b.Record(time.Microsecond)
	b.Record(3 * time.Second) // grows b's buckets past a's
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 3 || a.Min() != time.Microsecond || a.Max() != 3*time.Second {
		t.Fatalf("merged: count %d min %s max %s", a.Count(), a.Min(), a.Max())
	}
	if q := a.Quantile(0.5); q < 9*time.Millisecond || q > 11*time.Millisecond {
		t.Errorf("median %s, want about 10ms", q)
	}
	if empty.Quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
}

func TestBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 7 {
		b := bucket(v)
		if b < prev {
			t.Fatalf("bucket(%d) = %d < %d", v, b, prev)
		}
		prev = b
		if mid := bucketValue(b); v > 64 && (mid < v-v/60 || mid > v+v/60) {
			t.Fatalf("bucketValue(bucket(%d)) = %d, off by more than 1/60", v, mid)
		}
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int
		err      error
	}{
		{"ok", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT", 3, nil},
		{"case and spaces", "HTTP/1.0 200 OK\r\ncontent-length:  0 \r\nX: y\r\n\r\n", 0, nil},
		{"not 200", "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", 0, ErrBadResponse},
		{"no length", "HTTP/1.1 200 OK\r\n\r\n", 0, ErrBadResponse},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, ErrBadResponse},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", 0, errUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ReadResponse(bufio.NewReader(strings.NewReader(tc.in)))
			if !errors.Is(err, tc.err) || n != tc.want {
				t.Fatalf("ReadResponse = %d, %v; want %d, %v", n, err, tc.want, tc.err)
			}
		})
	}
}

var errUnexpectedEOF = func() error {
	_, err := bufio.NewReader(strings.NewReader("")).Discard(1)
	return noEOF(err)
}()

func TestReadRequest(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(string(requestKeepAlive) + string(requestClose)))
	if c, err := readRequest(br); err != nil || c {
		t.Fatalf("keep-alive request: close=%v err=%v", c, err)
	}
	if c, err := readRequest(br); err != nil || !c {
		t.Fatalf("close request: close=%v err=%v", c, err)
	}
}

// TestRunAndHold runs the load against the target on loopback, in both
// modes, and holds connections: what the benchmark does, briefly.
func TestRunAndHold(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var srv Server
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		ln.Close()
		<-done
	}()
	for _, mode := range []Mode{Short, KeepAlive} {
		r, err := Run(context.Background(), Load{Addr: ln.Addr().String(), Mode: mode, Concurrency: 2,
			Warmup: 20 * time.Millisecond, Duration: 150 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Requests == 0 || r.Errors != 0 || r.RPS() <= 0 || r.Latency.Count() != r.Requests {
			t.Fatalf("%s: %d requests, %d errors (%v), %.0f/s", mode, r.Requests, r.Errors, r.FirstError, r.RPS())
		}
	}
	conns, err := Hold(context.Background(), ln.Addr().String(), 20, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if c == nil {
			t.Fatalf("connection %d not held", i)
		}
	}
	// The load's own connections close asynchronously; wait for the count
	// to settle on exactly the held ones.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Active() != 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Active(); n != 20 {
		t.Errorf("target sees %d connections, want the 20 held", n)
	}
	CloseAll(conns)
}

// TestPaceSpreadsRequestsEvenly: at 1,000 req/s over 4 workers, the
// requests of all workers together are due one per millisecond, each due
// time once.
func TestPaceSpreadsRequestsEvenly(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const workers, perWorker = 4, 50
	seen := map[time.Duration]int{}
	for i := range workers {
		p := newPace(start, 1000, workers, i)
		prev := time.Time{}
		for k := range perWorker {
			due := p.next()
			if k > 0 && due.Sub(prev) != 4*time.Millisecond {
				t.Fatalf("worker %d: request %d due %s after the previous one, want 4ms", i, k, due.Sub(prev))
			}
			prev = due
			seen[due.Sub(start)]++
		}
	}
	for slot := range workers * perWorker {
		if n := seen[time.Duration(slot)*time.Millisecond]; n != 1 {
			t.Errorf("%d requests due at +%dms, want 1", n, slot)
		}
	}
}

func TestRunRejectsBadRate(t *testing.T) {
	for _, rate := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, err := Run(context.Background(), Load{Addr: "127.0.0.1:1", Concurrency: 1, Duration: time.Millisecond, Rate: rate}); err == nil {
			t.Errorf("rate %v accepted", rate)
		}
	}
}

// stallingServer answers like Server, but holds its very first answer
// back for stall: what a tunnel that stops for a moment looks like.
func stallingServer(t *testing.T, stall time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var first sync.Once
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := readRequest(br); err != nil {
						return
					}
					first.Do(func() { time.Sleep(stall) })
					if _, err := c.Write(responseKeepAlive); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPacedRunIsOpenLoop: a paced run sends no more than its schedule,
// and a stall of the target counts against every request due during it,
// not only the one that was waiting (a closed-loop client would report one
// slow request among hundreds, and a p99 of microseconds).
func TestPacedRunIsOpenLoop(t *testing.T) {
	const (
		rate  = 1000.0
		stall = 300 * time.Millisecond
		d     = time.Second
	)
	addr := stallingServer(t, stall)
	r, err := Run(context.Background(), Load{Addr: addr, Mode: KeepAlive, Concurrency: 1, Duration: d, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 {
		t.Fatalf("%d errors: %v", r.Errors, r.FirstError)
	}
	// The schedule has rate·d requests due in the run (one at its very
	// start); it can never send more, however fast the target.
	if limit := uint64(rate*d.Seconds()) + 1; r.Completed > limit || r.Requests > limit {
		t.Errorf("completed %d (counted %d), more than the %d the schedule allows", r.Completed, r.Requests, limit)
	}
	// The requests due in the first 150 ms of the stall (150 of at most
	// 1,001) each waited at least 150 ms from when they were due.
	if p := r.Latency.Quantile(0.99); p < stall/2 {
		t.Errorf("p99 %s with a %s stall at the start: latency not counted from when requests were due", p, stall)
	}
	if r.Latency.Max() < stall {
		t.Errorf("max latency %s, less than the %s stall", r.Latency.Max(), stall)
	}
	if r.Requests < 150 {
		t.Errorf("only %d requests counted; the ones held up by the stall should all complete", r.Requests)
	}
}

// TestLatencyFrom: a request held up by the previous answer counts from
// when it was due; one sent late only because the worker's own timer woke
// late counts from when it was sent.
func TestLatencyFrom(t *testing.T) {
	due := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ms := time.Millisecond
	if got := latencyFrom(due, due.Add(5*ms), due.Add(5*ms)); !got.Equal(due) {
		t.Errorf("held up by the previous answer: from %s, want the due time", got.Sub(due))
	}
	if got := latencyFrom(due, due.Add(-ms), due.Add(ms/2)); !got.Equal(due.Add(ms / 2)) {
		t.Errorf("worker idle, timer woke 0.5 ms late: from %s after due, want 0.5ms (when sent)", got.Sub(due))
	}
	if got := latencyFrom(due, due, due); !got.Equal(due) {
		t.Errorf("ready exactly when due: from %s", got.Sub(due))
	}
}
