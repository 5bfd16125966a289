package server

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestRecentRefusals: one entry per address and cause, counting repeats
// and keeping the latest reason; latest first; never more than recentMax,
// the oldest dropped.
func TestRecentRefusals(t *testing.T) {
	var r recentRefusals
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	r.add(a, CauseHTTP, "first", t0)
	r.add(&net.TCPAddr{IP: a.IP, Port: 2000}, CauseHTTP, "second", t0.Add(time.Second))
	r.add(a, CauseTimeout, "slow", t0.Add(2*time.Second))
	got := r.list()
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(got), got)
	}
	if got[0].Cause != CauseTimeout || got[1].Cause != CauseHTTP {
		t.Errorf("not latest first: %+v", got)
	}
	if h := got[1]; h.Addr != "192.0.2.1" || h.Count != 2 || h.Reason != "second" || !h.First.Equal(t0) || !h.Last.Equal(t0.Add(time.Second)) {
		t.Errorf("repeated refusal: %+v", h)
	}
	for i := range recentMax + 10 {
		r.add(&net.TCPAddr{IP: net.IPv4(198, 51, 100, byte(i)), Port: 1}, CauseNotTLS, "x", t0.Add(time.Duration(10+i)*time.Second))
	}
	got = r.list()
	if len(got) != recentMax {
		t.Fatalf("%d entries, want the bound %d", len(got), recentMax)
	}
	if want := fmt.Sprintf("198.51.100.%d", recentMax+9); got[0].Addr != want {
		t.Errorf("latest is %s, want %s", got[0].Addr, want)
	}
	for _, e := range got {
		if e.Addr == "192.0.2.1" {
			t.Errorf("the oldest entries were kept: %+v", e)
		}
	}
}
