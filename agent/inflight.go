package agent

import "sync"

// inflight counts work in progress and lets a drain wait for it to reach
// zero. Unlike sync.WaitGroup, Add may race with Wait: streams keep
// arriving (and are refused) while the agent drains.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0
}

func (f *inflight) Add() {
	f.mu.Lock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inflight) Done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.zero)
	}
	f.mu.Unlock()
}

// Idle returns a channel that is closed when nothing is in progress.
func (f *inflight) Idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.zero
}

// Count is the work in progress now.
func (f *inflight) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
