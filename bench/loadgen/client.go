package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"time"
)

// Mode is how requests use connections.
type Mode string

const (
	// Short opens a new TCP connection for every request ("Connection:
	// close"), so every request pays for connection setup through the
	// tunnel: for a per-connection TLS proxy, a handshake.
	Short Mode = "short"
	// KeepAlive sends requests one after another on long-lived connections:
	// the latency a tunnel adds to every call.
	KeepAlive Mode = "keepalive"
)

// Load describes one request/response run.
type Load struct {
	Addr        string
	Mode        Mode
	Concurrency int           // connections (workers) sending at once
	Warmup      time.Duration // run, but do not count, for this long first
	Duration    time.Duration // then count for this long
	// Rate, when positive, paces the run open-loop: Rate requests per
	// second in all, spread evenly over the connections and in time. A
	// request held up by the previous one's answer has its latency counted
	// from when it was due rather than from when it was sent, so a stall
	// counts against every request it held up (no coordinated omission).
	// Zero sends each request as soon as the last one's answer is in
	// (closed loop).
	Rate float64
}

// Result is what a run measured in its counted window.
type Result struct {
	Requests   uint64        // completed in the window
	Completed  uint64        // completed in the whole run, warm-up included
	Errors     uint64        // failed in the window (and warm-up)
	FirstError error         // the first failure, for the report
	Elapsed    time.Duration // length of the window
	Latency    Histogram     // per request, connection setup included for Short
}

// RPS is requests per second in the counted window.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// ioTimeout bounds one request, so a stuck tunnel fails a run instead of
// hanging it.
const ioTimeout = 10 * time.Second

// Run drives l.Concurrency workers for l.Warmup + l.Duration (or until ctx
// ends) and merges what they measured.
func Run(ctx context.Context, l Load) (*Result, error) {
	if l.Concurrency < 1 || l.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: concurrency %d and duration %s must be positive", l.Concurrency, l.Duration)
	}
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		return nil, fmt.Errorf("loadgen: rate %v must be a positive number of requests per second, or 0 for closed loop", l.Rate)
	}
	start := time.Now()
	w := window{from: start.Add(l.Warmup), to: start.Add(l.Warmup + l.Duration)}
	ctx, cancel := context.WithDeadline(ctx, w.to)
	defer cancel()
	results := make([]Result, l.Concurrency)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		var p *pace
		if l.Rate > 0 {
			p = newPace(start, l.Rate, l.Concurrency, i)
		}
		go func() {
			defer wg.Done()
			worker(ctx, l, w, p, &results[i])
		}()
	}
	wg.Wait()
	total := &Result{Elapsed: min(time.Since(w.from), l.Duration)}
	for i := range results {
		r := &results[i]
		total.Requests += r.Requests
		total.Completed += r.Completed
		total.Errors += r.Errors
		if total.FirstError == nil {
			total.FirstError = r.FirstError
		}
		total.Latency.Merge(&r.Latency)
	}
	return total, nil
}

// window is the counted part of a run.
type window struct{ from, to time.Time }

func (w window) counts(t time.Time) bool { return !t.Before(w.from) && !t.After(w.to) }

// pace is one worker's share of an open-loop schedule: with c workers at
// rate requests per second in all, worker i's k-th request is due at
// start + i/rate + k·c/rate, so the requests of all workers together are
// due one every 1/rate.
type pace struct {
	first time.Time
	every time.Duration
	k     int64
}

func newPace(start time.Time, rate float64, workers, i int) *pace {
	return &pace{
		first: start.Add(time.Duration(float64(i) / rate * float64(time.Second))),
		every: time.Duration(float64(workers) / rate * float64(time.Second)),
	}
}

// next is when the next request is due.
func (p *pace) next() time.Time {
	t := p.first.Add(time.Duration(p.k) * p.every)
	p.k++
	return t
}

// latencyFrom is when a paced request's latency starts. A request that
// was due while the previous one on its connection was still waiting for
// its answer (ready after due) counts from when it was due: the wait is
// the system's. One the worker had to wait for counts from when it was
// sent: a timer can fire up to a millisecond late when the process is
// idle (the poller sleeps in whole milliseconds), and that lateness is the
// load generator's, not the tunnel's.
func latencyFrom(due, ready, sent time.Time) time.Time {
	if ready.After(due) {
		return due
	}
	return sent
}

// worker sends requests until ctx ends: back to back, or when p says they
// are due.
func worker(ctx context.Context, l Load, w window, p *pace, r *Result) {
	d := net.Dialer{Timeout: ioTimeout}
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	req := requestKeepAlive
	if l.Mode == Short {
		req = requestClose
	}
	var timer *time.Timer
	if p != nil {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	for ctx.Err() == nil {
		t0 := time.Now()
		if p != nil {
			due := p.next()
			if due.After(w.to) {
				return // past the run: the schedule has nothing more
			}
			ready := t0
			if wait := due.Sub(ready); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
				t0 = time.Now()
			}
			t0 = latencyFrom(due, ready, t0)
		}
		err := func() error {
			if conn == nil {
				c, err := d.DialContext(ctx, "tcp", l.Addr)
				if err != nil {
					return err
				}
				conn = c
				if br == nil {
					br = bufio.NewReaderSize(c, 4096)
				} else {
					br.Reset(c)
				}
			}
			conn.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := conn.Write(req); err != nil {
				return err
			}
			_, err := ReadResponse(br)
			return err
		}()
		t1 := time.Now()
		if err != nil || l.Mode == Short {
			if conn != nil {
				conn.Close()
				conn = nil
			}
		}
		if err != nil {
			if ctx.Err() != nil || !time.Now().Before(w.to) {
				return // cut by the end of the run, not a failure
			}
			r.Errors++
			if r.FirstError == nil {
				r.FirstError = err
			}
			// Don't spin on a refused dial.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		r.Completed++
		if w.counts(t1) {
			r.Requests++
			r.Latency.Record(t1.Sub(t0))
		}
	}
}

// Hold opens n connections to addr, at most parallel at a time, proves each
// one end to end with a request and its answer, and returns them open and
// idle. On error it closes what it opened.
func Hold(ctx context.Context, addr string, n, parallel int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make(chan error, parallel)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: ioTimeout}
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n || ctx.Err() != nil {
					return
				}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(ioTimeout))
					if _, err = c.Write(requestKeepAlive); err == nil {
						_, err = ReadResponse(bufio.NewReaderSize(c, 1024))
					}
					c.SetDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d of %d: %w", k+1, n, err)
					return
				}
				conns[k] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		CloseAll(conns)
		return nil, err
	}
	return conns, nil
}

// CloseAll closes every non-nil connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
