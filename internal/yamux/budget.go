package yamux

import "sync/atomic"

// Postern: Budget bounds the bytes received and not yet read, summed over
// the streams that share it. Budgets nest: a session's budget may have a
// parent shared by every session of a process, and a frame is buffered only
// when every level has room. A data frame that does not fit resets its
// stream (RST) instead of being buffered, so a peer that fills the budget
// cuts its own streams, never the process's memory. It is safe for
// concurrent use; a nil *Budget is unlimited.
type Budget struct {
	limit  int64
	used   atomic.Int64
	parent *Budget
}

// NewBudget returns a budget of limit bytes inside parent (nil: none).
func NewBudget(limit int64, parent *Budget) *Budget {
	return &Budget{limit: limit, parent: parent}
}

// Used is the number of bytes buffered under the budget now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

func (b *Budget) take(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	if !b.parent.take(n) {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *Budget) give(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.used.Add(-n)
	b.parent.give(n)
}
