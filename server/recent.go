package server

import (
	"net"
	"slices"
	"sync"
	"time"
)

// recentMax bounds the refusals kept for status: the latest per address
// and cause, oldest dropped first.
const recentMax = 64

// Refusal is a recent refused connection, for `postern status`: the
// latest of its address and cause, and how many came.
type Refusal struct {
	Addr   string    `json:"addr"`   // the client's IP address
	Cause  Cause     `json:"cause"`  // the class of failure
	Reason string    `json:"reason"` // the latest one's reason, in plain words
	Count  int       `json:"count"`  // refusals of this address and cause while kept
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
}

// recentRefusals keeps the latest recentMax (address, cause) refusals. The
// zero value is ready; it is safe for concurrent use.
type recentRefusals struct {
	mu      sync.Mutex
	entries []Refusal // oldest Last first
}

func (r *recentRefusals) add(addr net.Addr, cause Cause, reason string, now time.Time) {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := Refusal{Addr: host, Cause: cause, First: now}
	if i := slices.IndexFunc(r.entries, func(e Refusal) bool { return e.Addr == host && e.Cause == cause }); i >= 0 {
		e = r.entries[i]
		r.entries = slices.Delete(r.entries, i, i+1)
	} else if len(r.entries) >= recentMax {
		r.entries = slices.Delete(r.entries, 0, 1)
	}
	e.Count++
	e.Reason, e.Last = reason, now
	r.entries = append(r.entries, e)
}

// list returns the refusals kept, latest first.
func (r *recentRefusals) list() []Refusal {
	r.mu.Lock()
	out := slices.Clone(r.entries)
	r.mu.Unlock()
	slices.Reverse(out)
	return out
}

// Recent lists the latest refused connections (probes excepted), at most
// one per address and cause and 64 in all, latest first.
func (s *Server) Recent() []Refusal { return s.recent.list() }
