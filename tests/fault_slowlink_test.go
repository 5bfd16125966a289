//go:build unix

package tests

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestFaultSlowLossyLink: the tunnel runs over a slow, lossy link (a relay
// between the agents: 4 MiB/s per direction, 2 ms per chunk, stalls of
// 400 ms, and now and then a cut of the whole tunnel). Transfers in both
// directions either arrive whole or are cut and reset — never cut but
// clean, never corrupted — and only a cut of the tunnel cuts them.
func TestFaultSlowLossyLink(t *testing.T) {
	t.Parallel()
	var link *faultLink
	p := faultStartPair(t, faultPairOptions{link: func(hubAddr string) string {
		link = faultNewLink(t, hubAddr)
		link.Rate = 4 << 20
		link.Delay = 2 * time.Millisecond
		link.StallP = 0.003
		link.StallFor = 400 * time.Millisecond
		return link.Addr
	}})
	link.SetCutP(0.001) // only once the tunnel is up: now and then a cut

	const transfers, parallel = 32, 4
	var (
		mu      sync.Mutex
		results []faultResult
		wg      sync.WaitGroup
		next    = make(chan int, transfers)
	)
	for i := range transfers {
		next <- i
	}
	close(next)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				spec := faultSpec{Up: rand.Int64N(512 << 10), Down: rand.Int64N(1 << 20), Timeout: 60 * time.Second}
				r := faultTransfer(p.forward, spec)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	counts := map[faultClass]int{}
	for _, r := range results {
		counts[r.Class]++
		if r.Class != faultComplete && r.Class != faultReset {
			t.Errorf("over the slow, lossy link: %v; want complete or cut-and-reset", r)
		}
		// The target's end of a transfer the application saw whole is
		// whole too, or reset when the link was cut between the
		// application's last byte and its acknowledgement reaching the
		// target.
		if r.Class == faultComplete {
			if tr := p.target.result(t, r.ID, 10*time.Second); tr.Class != faultComplete && tr.Class != faultReset {
				t.Errorf("target: transfer %d the application saw complete ended %s (%v)", r.ID, tr.Class, tr.Err)
			}
		}
	}
	t.Logf("%d transfers: %d complete, %d cut and reset, %d other; link cuts %d, stalls %d",
		len(results), counts[faultComplete], counts[faultReset], len(results)-counts[faultComplete]-counts[faultReset], link.cuts.Load(), link.stalls.Load())
	// A cut of the tunnel resets the transfers in flight, at most one per
	// worker; every other transfer arrives whole, however many cuts the
	// random link made (the count of whole transfers alone would depend
	// on the dice).
	if cuts := int(link.cuts.Load()); counts[faultReset] > parallel*cuts {
		t.Errorf("%d of %d transfers cut over the slow link, but the link cut the tunnel %d times (at most %d transfers in flight each time)",
			counts[faultReset], transfers, cuts, parallel)
	}
	for _, class := range []faultClass{faultCutClean, faultCorrupted} {
		if n := p.target.counts[class].Load(); n != 0 {
			t.Errorf("the target saw %d %s transfers", n, class)
		}
	}
}
