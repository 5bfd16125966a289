package tunnel

// LeastLoaded returns the tunnel among ts with the fewest open streams that
// takes new streams (not closed, not retiring) and passes ok (nil: any), or
// nil when there is none.
func LeastLoaded(ts []*Tunnel, ok func(*Tunnel) bool) *Tunnel {
	var best *Tunnel
	bestN := 0
	for _, t := range ts {
		if t == nil || t.Closed() || t.Retiring() || ok != nil && !ok(t) {
			continue
		}
		if n := t.Streams(); best == nil || n < bestN {
			best, bestN = t, n
		}
	}
	return best
}

// Changes wakes goroutines waiting for a set of tunnels to change: Wait
// returns a channel that the next Notify closes. The zero value is ready.
// It has no lock of its own: callers hold the lock that guards the set
// around both calls.
type Changes struct {
	ch chan struct{}
}

// Notify wakes everyone waiting.
func (c *Changes) Notify() {
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Wait returns a channel closed at the next Notify.
func (c *Changes) Wait() <-chan struct{} {
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}
