package server

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// failureLog writes refused-connection lines, at most one per source
// address and message per period. Repeats are counted, not lost: the next
// line says how many were suppressed.
type failureLog struct {
	out    *slog.Logger
	period time.Duration

	mu   sync.Mutex
	seen map[string]*failureEntry
}

type failureEntry struct {
	last       time.Time
	suppressed int
}

func newFailureLog(l *slog.Logger, period time.Duration) *failureLog {
	return &failureLog{out: l, period: period, seen: map[string]*failureEntry{}}
}

func (f *failureLog) log(addr net.Addr, msg string) {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	key := host + "\x00" + withoutDigits(msg)
	now := time.Now()
	f.mu.Lock()
	e := f.seen[key]
	if e != nil && now.Sub(e.last) < f.period {
		e.suppressed++
		f.mu.Unlock()
		return
	}
	suppressed := 0
	if e != nil {
		suppressed = e.suppressed
	}
	f.seen[key] = &failureEntry{last: now}
	if len(f.seen) > 4096 {
		for k, v := range f.seen {
			if now.Sub(v.last) >= f.period {
				delete(f.seen, k)
			}
		}
	}
	f.mu.Unlock()
	args := []any{"peer_addr", addr.String()}
	if suppressed > 0 {
		args = append(args, "repeated", suppressed)
	}
	f.out.Warn(msg, args...)
}

// withoutDigits keys repeats of one cause together even when the message
// carries a clock or a counter.
func withoutDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, s)
}
