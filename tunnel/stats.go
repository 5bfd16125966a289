package tunnel

import (
	"sync/atomic"
	"time"
)

// counters are a tunnel's running totals for status: when it came up and
// the bytes its streams carried each way. Adds are atomic, one per Read or
// Write call.
type counters struct {
	since    time.Time
	sent     atomic.Int64 // written to the tunnel's streams
	received atomic.Int64 // read from them
}

// Since is when the tunnel came up (its multiplexer started).
func (t *Tunnel) Since() time.Time { return t.stats.since }

// Bytes are the bytes this side's streams have written to the tunnel
// (sent) and read from it (received) so far, framing included.
func (t *Tunnel) Bytes() (sent, received int64) {
	return t.stats.sent.Load(), t.stats.received.Load()
}

func (s *Stream) count(n int, sent bool) {
	if n <= 0 {
		return
	}
	if sent {
		s.t.stats.sent.Add(int64(n))
	} else {
		s.t.stats.received.Add(int64(n))
	}
}
