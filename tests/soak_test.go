//go:build unix

package tests

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var soakDuration = flag.Duration("soak", 0, "run TestSoak for this long (make soak; not part of make test)")

// soakRig is a hub and a site that the soak kills, drains and restarts:
// the site dials the hub through a faultLink; the hub's service "data"
// and the site's service "rdata" reach the same faultTarget; the site's
// forward "data" and the hub's reverse forward "rdata" are the entries.
type soakRig struct {
	t         *testing.T
	dir       string
	certs     *e2eCerts
	target    *faultTarget
	link      *faultLink
	hubListen string
	gen       atomic.Int64

	mu        sync.Mutex
	hub, site *e2eAgent
	entries   [2]atomic.Pointer[string] // site forward, hub reverse forward
}

const soakTunnel = "[tunnel]\nkeepalive_interval = \"1s\"\nkeepalive_timeout = \"4s\"\n"

func (r *soakRig) startHub() {
	t := r.t
	name := fmt.Sprintf("hub-%d", r.gen.Add(1))
	hub := e2eStartAgent(t, name, e2eWriteConfig(t, r.dir, name, faultConf("hub", r.certs.hub, "2s", soakTunnel,
		fmt.Sprintf("[[server]]\nlisten = %q\n", r.hubListen),
		e2eServiceTOML("data", r.target.Addr, "cn:site-a"), faultForward("rdata", "cn:site-a"))))
	addr := hub.serverAddr(t)
	if r.hubListen == "127.0.0.1:0" {
		r.hubListen = addr
		r.link.setUpstream(addr)
	}
	fwd := hub.forwardAddr(t, "rdata")
	r.mu.Lock()
	r.hub = hub
	r.mu.Unlock()
	r.entries[1].Store(&fwd)
}

func (r *soakRig) startSite() {
	t := r.t
	name := fmt.Sprintf("site-%d", r.gen.Add(1))
	site := e2eStartAgent(t, name, e2eWriteConfig(t, r.dir, name, faultConf("site-a", r.certs.site, "2s", soakTunnel,
		faultClient(r.link.Addr), faultForward("data", "hub"), e2eServiceTOML("rdata", r.target.Addr, "cn:hub"))))
	fwd := site.forwardAddr(t, "data")
	r.mu.Lock()
	r.site = site
	r.mu.Unlock()
	r.entries[0].Store(&fwd)
}

// soakBad is a transfer that broke the promise, and when it ran.
type soakBad struct {
	r          faultResult
	start, end time.Time
}

// soakEvent is a fault the soak injected.
type soakEvent struct {
	at    time.Time
	fault string
}

// TestSoak: mixed load through two agents — many short and long
// transfers, both directions, through a forward and a reverse forward —
// for -soak DURATION, with random faults: kill -9 and restart of either
// agent, drain (SIGTERM with a 2s shutdown_timeout) and restart, link
// stalls and cuts, and targets that reset. It prints what moved and how
// every transfer ended; a transfer corrupted or cut but clean, at the
// application or at the target, fails it. Run with `make soak`.
func TestSoak(t *testing.T) {
	if *soakDuration <= 0 {
		t.Skip("the soak runs only with -soak DURATION (make soak)")
	}
	e2eBinary(t)
	r := &soakRig{t: t, dir: t.TempDir(), hubListen: "127.0.0.1:0"}
	r.certs = e2eNewCerts(t, r.dir)
	r.target = faultNewTarget(t)
	r.link = faultNewLink(t, "127.0.0.1:1") // upstream set when the hub listens
	r.link.Delay = 500 * time.Microsecond
	r.startHub()
	r.startSite()
	r.site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+r.link.Addr)

	deadline := time.Now().Add(*soakDuration)
	var (
		stop     atomic.Bool
		moved    atomic.Int64
		counts   [5]atomic.Int64
		refused  atomic.Int64
		mu       sync.Mutex
		bad      []soakBad
		events   []soakEvent
		faults   = map[string]int{}
		wg       sync.WaitGroup
		progress = time.NewTicker(30 * time.Second)
	)
	defer progress.Stop()
	const workers = 12
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for !stop.Load() {
				entry := *r.entries[rng.IntN(2)].Load()
				spec := faultSpec{Timeout: 90 * time.Second}
				if rng.IntN(5) == 0 { // long
					spec.Up, spec.Down = rng.Int64N(8<<20), rng.Int64N(8<<20)
				} else {
					spec.Up, spec.Down = rng.Int64N(64<<10), rng.Int64N(64<<10)
				}
				if rng.IntN(20) == 0 && spec.Down+spec.Up > 0 { // the target resets part way
					spec.Action = faultActReset
					if spec.Down > 0 { // the action applies to the download when there is one
						spec.At = rng.Int64N(spec.Down)
					} else {
						spec.At = rng.Int64N(spec.Up)
					}
				}
				res := faultTransfer(entry, spec)
				end := time.Now()
				moved.Add(res.Down + res.Up)
				if !res.Connected && res.Class == faultFailed {
					refused.Add(1)
					time.Sleep(50 * time.Millisecond) // pace retries while an agent restarts
					continue
				}
				counts[res.Class].Add(1)
				if res.Class.bad() {
					mu.Lock()
					bad = append(bad, soakBad{res, end.Add(-res.Elapsed), end})
					mu.Unlock()
				}
			}
		}()
	}

	// The faults, one at a time, every 4 to 10 seconds.
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for time.Now().Before(deadline) {
		wait := time.Duration(4+rng.IntN(7)) * time.Second
		select {
		case <-time.After(min(wait, time.Until(deadline))): // the soak's pace between faults
		case <-progress.C:
			fmt.Printf("soak: %s left: %d MiB moved, %d complete, %d cut and reset, %d bad\n",
				time.Until(deadline).Round(time.Second), moved.Load()>>20, counts[faultComplete].Load(), counts[faultReset].Load(),
				counts[faultCutClean].Load()+counts[faultCorrupted].Load())
			continue
		}
		if !time.Now().Before(deadline) {
			break
		}
		r.mu.Lock()
		hub, site := r.hub, r.site
		r.mu.Unlock()
		var fault string
		at := time.Now()
		switch rng.IntN(6) {
		case 0:
			fault = "kill -9 hub"
			hub.signal(t, syscall.SIGKILL)
			hub.waitExit(t, 10*time.Second)
			r.startHub()
		case 1:
			fault = "kill -9 site"
			site.signal(t, syscall.SIGKILL)
			site.waitExit(t, 10*time.Second)
			r.startSite()
		case 2:
			fault = "drain hub"
			hub.signal(t, syscall.SIGTERM)
			hub.waitExit(t, 15*time.Second)
			r.startHub()
		case 3:
			fault = "drain site"
			site.signal(t, syscall.SIGTERM)
			site.waitExit(t, 15*time.Second)
			r.startSite()
		case 4:
			fault = "link stall 2s"
			r.link.Stall(2 * time.Second)
		case 5:
			fault = "link cut"
			r.link.Cut()
		}
		mu.Lock()
		faults[fault]++
		events = append(events, soakEvent{at, fault})
		mu.Unlock()
	}
	stop.Store(true)
	wg.Wait()

	tc := func(c faultClass) int64 { return r.target.counts[c].Load() }
	report := fmt.Sprintf(`soak: %s with faults %v
  bytes moved:                         %d (%d MiB)
  transfers completed:                 %d
  transfers cut and reported as reset: %d
  transfers cut but clean:             %d   (must be 0)
  transfers corrupted:                 %d   (must be 0)
  transfers failed otherwise:          %d   (timeouts and other errors)
  connections refused (agent down):    %d
  at the target: %d complete, %d reset, %d cut but clean, %d corrupted, %d failed
  link: %d cuts, %d stalls`,
		*soakDuration, faults, moved.Load(), moved.Load()>>20, counts[faultComplete].Load(), counts[faultReset].Load(),
		counts[faultCutClean].Load(), counts[faultCorrupted].Load(), counts[faultFailed].Load(), refused.Load(),
		tc(faultComplete), tc(faultReset), tc(faultCutClean), tc(faultCorrupted), tc(faultFailed), r.link.cuts.Load(), r.link.stalls.Load())
	fmt.Println(report)
	t.Log(report)
	for i, b := range bad {
		if i == 20 {
			t.Errorf("… and %d more", len(bad)-20)
			break
		}
		var during []string
		for _, e := range events {
			if !e.at.Before(b.start.Add(-time.Second)) && !e.at.After(b.end) {
				during = append(during, e.fault)
			}
		}
		t.Errorf("%v; faults during it: %v", b.r, during)
	}
	if n := tc(faultCutClean) + tc(faultCorrupted); n > 0 {
		t.Errorf("the target saw %d transfers cut but clean or corrupted", n)
	}
	if counts[faultComplete].Load() == 0 {
		t.Errorf("no transfer completed")
	}
}
