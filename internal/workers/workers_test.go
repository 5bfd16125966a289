package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestPool returns a pool whose workers report each wait and exit on
// the returned channel.
func newTestPool(t *testing.T, idle time.Duration) (*Pool, chan struct{}) {
	events := make(chan struct{}, 1000)
	p := New(idle)
	p.hook = func() { events <- struct{}{} }
	t.Cleanup(p.Close)
	return p, events
}

func (p *Pool) counts() (started, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started, len(p.waiting)
}

func (p *Pool) lastWaiting() *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting[len(p.waiting)-1]
}

// TestPoolKeepsWorkers: tasks one after another run on one worker; tasks
// at once each get one, and those workers then serve the next tasks.
func TestPoolKeepsWorkers(t *testing.T) {
	p, events := newTestPool(t, time.Hour)
	for range 20 {
		p.Go(func() {})
		<-events // the worker waits again
	}
	if started, waiting := p.counts(); started != 1 || waiting != 1 {
		t.Fatalf("20 tasks one after another: %d workers started, %d waiting; want 1, 1", started, waiting)
	}

	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(5)
	for range 5 {
		p.Go(func() { <-release; wg.Done() })
	}
	close(release)
	wg.Wait()
	for range 5 {
		<-events
	}
	if started, waiting := p.counts(); started != 5 || waiting != 5 {
		t.Fatalf("5 tasks at once, one worker waiting before: %d workers started, %d waiting; want 5, 5", started, waiting)
	}
	var ran atomic.Int32
	for range 5 {
		p.Go(func() { ran.Add(1) })
	}
	for range 5 {
		<-events
	}
	if started, _ := p.counts(); started != 5 || ran.Load() != 5 {
		t.Fatalf("5 more tasks with 5 workers waiting: %d ran, %d workers started in all; want 5, still 5", ran.Load(), started)
	}
}

// TestPoolIdleWorkersExit: a worker without a task for the idle time
// exits; the pool then starts a new one for the next task.
func TestPoolIdleWorkersExit(t *testing.T) {
	p, events := newTestPool(t, time.Millisecond)
	p.Go(func() {})
	<-events // waiting
	<-events // exited after the idle time
	if started, waiting := p.counts(); started != 1 || waiting != 0 {
		t.Fatalf("after the idle time: %d started, %d waiting; want 1, 0", started, waiting)
	}
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	if started, _ := p.counts(); started != 2 {
		t.Fatalf("a task after the only worker exited: %d workers started in all, want 2", started)
	}
}

// TestPoolLastFinishedWorksNext: with more workers waiting than tasks
// come, the one that finished last takes the next task, so the others
// stay idle long enough to exit.
func TestPoolLastFinishedWorksNext(t *testing.T) {
	p, events := newTestPool(t, time.Hour)
	release := make(chan struct{})
	ids := make(chan int, 3)
	for i := range 3 {
		p.Go(func() { <-release; ids <- i })
	}
	close(release)
	for range 3 {
		<-events
	}
	last := p.lastWaiting()
	p.Go(func() {})
	<-events
	if got := p.lastWaiting(); got != last {
		t.Fatal("the next task did not go to the worker that finished last")
	}
}

// TestPoolClose: Close ends waiting workers at once and busy ones after
// their task; tasks given after it still run.
func TestPoolClose(t *testing.T) {
	p, events := newTestPool(t, time.Hour)
	release := make(chan struct{})
	p.Go(func() { <-release }) // busy
	p.Go(func() {})            // a second worker, then waiting
	<-events
	p.Close()
	<-events // the waiting one exits
	close(release)
	<-events // the busy one exits after its task
	if started, waiting := p.counts(); started != 2 || waiting != 0 {
		t.Fatalf("after Close: %d started, %d waiting; want 2, 0", started, waiting)
	}
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
}

// BenchmarkStartDeepTask compares a goroutine of its own with a pool's
// worker for a task that needs a deep stack, as a connection's setup does.
func BenchmarkStartDeepTask(b *testing.B) {
	deep := func(wg *sync.WaitGroup) func() {
		return func() {
			recurse(64)
			wg.Done()
		}
	}
	b.Run("goroutine", func(b *testing.B) {
		var wg sync.WaitGroup
		task := deep(&wg)
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			go task()
			wg.Wait()
		}
	})
	b.Run("pool", func(b *testing.B) {
		p := New(time.Minute)
		defer p.Close()
		var wg sync.WaitGroup
		task := deep(&wg)
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			p.Go(task)
			wg.Wait()
		}
	})
}

// recurse uses about n × 256 bytes of stack.
//
//go:noinline
func recurse(n int) byte {
	var pad [200]byte
	pad[n%200] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return recurse(n-1) + pad[n%200]
}
