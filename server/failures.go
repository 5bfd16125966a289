package server

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// defaultRefusalSources bounds the (source, cause) pairs the refusal log
// tracks at once; it is not a config key, as the memory it bounds is small
// (about 100 bytes a pair).
const defaultRefusalSources = 1024

// refusalLog writes refused-connection lines, at most one per source and
// cause per period. The first line of a kind says that further ones are
// counted; when the period ends, a line says how many more came, if any.
// Keys are (source, cause class): nothing in them comes from bytes the
// peer chose, and at most max of them are kept, each for one period. Past
// max, refusals from sources not already tracked are counted together per
// cause, as "other addresses".
//
// log may be called from any goroutine; run, on a goroutine of its own,
// writes the counts as periods end, and once more when it stops.
type refusalLog struct {
	out    *slog.Logger
	period time.Duration
	max    int

	mu      sync.Mutex
	entries map[refusalKey]*list.Element
	order   list.List     // of *refusalEntry, by start (oldest first)
	wake    chan struct{} // an entry was added to an empty log
}

type refusalKey struct {
	source netip.Prefix
	cause  Cause
	others bool // counts the sources not tracked because max was reached
}

type refusalEntry struct {
	key   refusalKey
	start time.Time
	count int // refusals after the one logged
}

func newRefusalLog(l *slog.Logger, period time.Duration, max int) *refusalLog {
	return &refusalLog{out: l, period: period, max: max,
		entries: map[refusalKey]*list.Element{}, wake: make(chan struct{}, 1)}
}

// log records a refusal of conn from addr: a line if it is the first of
// its kind this period, a count otherwise.
func (f *refusalLog) log(addr net.Addr, cause Cause, reason string) {
	key := refusalKey{source: sourceOf(addr), cause: cause}
	f.mu.Lock()
	if f.countLocked(key) {
		f.mu.Unlock()
		return
	}
	if len(f.entries) >= f.max {
		key = refusalKey{cause: cause, others: true}
		if f.countLocked(key) {
			f.mu.Unlock()
			return
		}
	}
	if f.order.Len() == 0 {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	f.entries[key] = f.order.PushBack(&refusalEntry{key: key, start: time.Now()})
	f.mu.Unlock()

	note := fmt.Sprintf("further refusals of this kind from %s are counted for %s", sourceString(key.source), shortDuration(f.period))
	if key.others {
		note = fmt.Sprintf("the refusal log is tracking %d addresses: further refusals of this kind from other addresses are counted for %s", f.max, shortDuration(f.period))
	}
	f.out.Warn("tunnel refused", "peer_addr", addr.String(), "cause", string(cause), "reason", reason, "repeats", note)
}

// countLocked counts a repeat of key, if key is tracked.
func (f *refusalLog) countLocked(key refusalKey) bool {
	el, ok := f.entries[key]
	if ok {
		el.Value.(*refusalEntry).count++
	}
	return ok
}

// run writes the counts of periods as they end, until ctx is done; then
// it writes the counts of the periods in progress.
func (f *refusalLog) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.flush(time.Time{})
			return
		case <-f.wake:
		case <-t.C:
		}
		if next := f.flush(time.Now()); !next.IsZero() {
			t.Reset(time.Until(next))
		}
	}
}

// flush forgets the entries whose period ended by now (all of them when
// now is zero), writing a line for each that counted repeats, and returns
// when the next period ends (zero if none is left).
func (f *refusalLog) flush(now time.Time) time.Time {
	var ended []*refusalEntry
	f.mu.Lock()
	for el := f.order.Front(); el != nil; el = f.order.Front() {
		e := el.Value.(*refusalEntry)
		if !now.IsZero() && now.Sub(e.start) < f.period {
			break
		}
		f.order.Remove(el)
		delete(f.entries, e.key)
		ended = append(ended, e)
	}
	var next time.Time
	if el := f.order.Front(); el != nil {
		next = el.Value.(*refusalEntry).start.Add(f.period)
	}
	f.mu.Unlock()
	for _, e := range ended {
		if e.count == 0 {
			continue
		}
		in := f.period
		if now.IsZero() {
			in = time.Since(e.start)
		}
		from := sourceString(e.key.source)
		if e.key.others {
			from = "other addresses"
		}
		f.out.Warn("tunnel refusals counted", "source", from, "cause", string(e.key.cause), "count", e.count,
			"summary", fmt.Sprintf("%d more refusals from %s (%s) in the last %s", e.count, from, e.key.cause, shortDuration(in)))
	}
	return next
}

// size is how many entries the log holds (for tests).
func (f *refusalLog) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

// shortDuration prints d as people write it: "1m", "1m30s", "2h".
func shortDuration(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Second)
	} else {
		d = d.Round(time.Millisecond)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
