//go:build unix

package tests

import (
	"syscall"
	"testing"
	"time"
)

// TestFaultDrainDeadline: SIGTERM with a short shutdown_timeout while a
// transfer is stuck (the target holds its answer). When the deadline
// passes the agent aborts what is still open: the application and the
// target must both see a reset, never the clean close the kernel makes of
// a socket closed on exit. On each side.
func TestFaultDrainDeadline(t *testing.T) {
	for _, victim := range []string{"hub", "site"} {
		t.Run(victim, func(t *testing.T) {
			t.Parallel()
			p := faultStartPair(t, faultPairOptions{hubShutdown: "1s", siteShutdown: "1s"})
			_, down := faultHeldDownload(t, p.target, p.forward, 4<<20, 256<<10)
			upID := faultNextID.Add(1) // an upload the target stopped reading
			up := faultStart(p.forward, faultSpec{ID: upID, Up: 8 << 20, Action: faultActHold, At: 256 << 10, Timeout: 60 * time.Second})
			p.target.waitHeld(t, upID, 10*time.Second)
			a := p.hub
			if victim == "site" {
				a = p.site
			}
			stop := time.Now()
			a.signal(t, syscall.SIGTERM)
			a.log.WaitFor(t, 5*time.Second, "shutdown_timeout")
			code := a.waitExit(t, 10*time.Second)
			t.Logf("%s exited with %d %s after SIGTERM", victim, code, time.Since(stop).Round(time.Millisecond))
			if code == -1 {
				t.Errorf("%s was killed by a signal, want an exit after its drain deadline", victim)
			}
			faultExpectReset(t, p.target, faultWait(t, down, 20*time.Second), true)
			faultExpectReset(t, p.target, faultWait(t, up, 20*time.Second), false)
		})
	}
}
