// Package workers runs short tasks on goroutines kept for the next task.
//
// A new goroutine starts with a small stack, and one that sets up a
// connection (a stream's open, the first TLS write on it) grows that stack
// by copying it, two or three times, each time unwinding every frame; with
// a new connection per request that was 6 % of a hub's CPU. A worker kept
// from an earlier task has grown already. The worker that finished last is
// the next to work, so workers beyond what the load needs stay idle and
// exit after a while: an idle agent holds none.
package workers

import (
	"sync"
	"time"
)

// Pool runs tasks on kept goroutines. Make one with New.
type Pool struct {
	idle time.Duration

	mu      sync.Mutex
	waiting []*worker // idle workers, the last to finish at the end
	closed  bool

	started int    // workers started, for tests
	hook    func() // when not nil, runs as a worker starts to wait or exits (tests)
}

type worker struct {
	task chan func() // one slot: a task, or nil to exit
}

// New returns a pool whose workers exit after idle without a task.
func New(idle time.Duration) *Pool { return &Pool{idle: idle} }

// Go runs f on the worker that finished last, or on a new one when none
// waits.
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if n := len(p.waiting); n > 0 {
		w := p.waiting[n-1]
		p.waiting[n-1] = nil
		p.waiting = p.waiting[:n-1]
		p.mu.Unlock()
		w.task <- f // never blocks: the slot is free while the worker waits
		return
	}
	if p.closed {
		p.mu.Unlock()
		go f()
		return
	}
	p.started++
	p.mu.Unlock()
	go p.work(&worker{task: make(chan func(), 1)}, f)
}

// Close makes every waiting worker exit, and every busy one once its task
// ends. Go still runs tasks after Close, each on a goroutine of its own.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	waiting := p.waiting
	p.waiting = nil
	p.mu.Unlock()
	for _, w := range waiting {
		w.task <- nil
	}
}

func (p *Pool) work(w *worker, f func()) {
	t := time.NewTimer(p.idle)
	defer t.Stop()
	if p.hook != nil {
		defer p.hook()
	}
	for f != nil {
		f()
		if !p.wait(w) {
			return
		}
		t.Reset(p.idle)
		select {
		case f = <-w.task:
		case <-t.C:
			if p.retire(w) {
				return
			}
			f = <-w.task // Go took this worker as the timer fired: its task is on the way
		}
	}
}

// wait puts w at the end of the waiting workers, or reports false when the
// pool is closed.
func (p *Pool) wait(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.waiting = append(p.waiting, w)
	if p.hook != nil {
		p.hook()
	}
	return true
}

// retire takes w out of the waiting workers and reports true, or reports
// false when Go (or Close) has taken it already.
func (p *Pool) retire(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiting {
		if x == w {
			n := len(p.waiting)
			copy(p.waiting[i:], p.waiting[i+1:])
			p.waiting[n-1] = nil
			p.waiting = p.waiting[:n-1]
			return true
		}
	}
	return false
}
