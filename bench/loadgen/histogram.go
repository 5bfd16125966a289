// Package loadgen is the benchmark's load: a small HTTP/1.1 target, a client
// that sends request/response traffic (a new connection per request, or
// keep-alive) and measures latency, and a holder of many idle connections.
//
// The client and the target speak just enough HTTP/1.1 for the benchmark
// and cost little CPU, so on a 2-core machine most of the time goes to the
// tunnel being measured, not to the load.
package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits is the log2 of the number of linear sub-buckets per power of two:
// with 64 sub-buckets a recorded value is within 1/64 (1.6 %) of the truth.
const subBits = 6

// Histogram counts durations in log-linear buckets (like HdrHistogram): an
// exact count, min and max, and quantiles to about 1.6 %. The zero value is
// ready to use. A Histogram is used by one goroutine; Merge combines them.
type Histogram struct {
	counts []uint64
	n      uint64
	min    time.Duration
	max    time.Duration
}

// bucket maps a non-negative nanosecond value to its bucket index.
func bucket(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	exp := bits.Len64(v) - 1 - subBits // how far v is shifted to keep subBits+1 bits
	return (exp+1)<<subBits + int(v>>uint(exp)) - 1<<subBits
}

// bucketValue is the middle of bucket i, in nanoseconds.
func bucketValue(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	exp := i>>subBits - 1
	lo := uint64(i&(1<<subBits-1)|1<<subBits) << uint(exp)
	return lo + (uint64(1)<<uint(exp))/2
}

// Record adds one duration (negative ones count as zero).
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := bucket(uint64(d))
	if i >= len(h.counts) {
		grown := make([]uint64, i+1, max(i+1, 2*len(h.counts)))
		copy(grown, h.counts)
		h.counts = grown
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		grown := make([]uint64, len(o.counts))
		copy(grown, h.counts)
		h.counts = grown
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min and Max are exact.
func (h *Histogram) Min() time.Duration { return h.min }
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the value below which a fraction q (0..1) of the
// recorded values fall, clamped to [Min, Max]. It is 0 when nothing was
// recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(bucketValue(i))
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
