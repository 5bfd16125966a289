//go:build unix

package tests

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFaultGoAwayRenewal: the site renews its tunnel every second
// (max_tunnel_lifetime = "1s": a new tunnel, GoAway on the old one) while
// six clients connect over and over through a forward and one long stream
// pins the old tunnel. New streams must only go to tunnels that accept
// them: zero resets, every transfer whole — through the site's forward
// and through a reverse forward on the hub.
func TestFaultGoAwayRenewal(t *testing.T) {
	for _, mode := range []string{"forward", "reverse"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p := faultStartPair(t, faultPairOptions{
				siteClient: []string{`max_tunnel_lifetime = "1s"`},
				// The site offers the service "rdata"; the hub's forward
				// reaches it over whichever of the site's tunnels accepts
				// streams.
				hubExtra:   []string{faultForward("rdata", "cn:site-a")},
				siteOffers: true,
			})
			entry, target := p.forward, p.target
			if mode == "reverse" {
				entry = p.hub.forwardAddr(t, "rdata")
			}

			longID, long := faultHeldDownload(t, target, entry, 2<<20, 512<<10)

			const clients = 6
			renewals := func() int {
				return strings.Count(p.site.log.String(), "the old tunnel closes when its streams end")
			}
			start := time.Now()
			var stop atomic.Bool
			var mu sync.Mutex
			var results []faultResult
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 5000 && !stop.Load(); i++ {
						r := faultTransfer(entry, faultSpec{Up: 16 << 10, Down: 32 << 10, Timeout: 20 * time.Second})
						mu.Lock()
						results = append(results, r)
						mu.Unlock()
					}
				}()
			}
			// Run until the tunnel was renewed at least five times (or 20s).
			faultWaitCount(p.site, "the old tunnel closes when its streams end", 5, 20*time.Second)
			stop.Store(true)
			wg.Wait()
			target.release(longID)
			lr := faultWait(t, long, 30*time.Second)

			counts := map[faultClass]int{}
			for _, r := range results {
				counts[r.Class]++
				if r.Class != faultComplete {
					t.Errorf("%v; want complete (no resets while the tunnel is renewed)", r)
				}
			}
			t.Logf("%d renewals in %s; %d transfers: %d complete, %d reset, %d other",
				renewals(), time.Since(start).Round(time.Millisecond), len(results), counts[faultComplete], counts[faultReset],
				len(results)-counts[faultComplete]-counts[faultReset])
			if lr.Class != faultComplete {
				t.Errorf("the long stream on the old tunnel: %v; want complete", lr)
			}
			if renewals() < 5 {
				t.Errorf("the site renewed its tunnel %d times in %s, want at least 5", renewals(), time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

// faultWaitCount waits until a's log holds text at least n times, or
// timeout passes; it reports whether it does.
func faultWaitCount(a *e2eAgent, text string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for strings.Count(a.log.String(), text) < n {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
