//go:build unix

package tests

import (
	"syscall"
	"testing"
	"time"
)

// TestFaultKill: kill -9 of either agent in the middle of a transfer. The
// kernel closes a dead process's sockets; Postern arms SO_LINGER 0 on its
// plaintext connections so that close is a reset. The application (on the
// site's side) and the target (on the hub's side) must both see
// ECONNRESET, never a clean EOF: one held download checks both ends, one
// upload in flight checks the application's writes.
func TestFaultKill(t *testing.T) {
	for _, victim := range []string{"hub", "site"} {
		t.Run(victim, func(t *testing.T) {
			t.Parallel()
			p := faultStartPair(t, faultPairOptions{})
			id, down := faultHeldDownload(t, p.target, p.forward, 8<<20, 1<<20)
			upID := faultNextID.Add(1)
			up := faultStart(p.forward, faultSpec{ID: upID, Up: 8 << 20, Action: faultActHold, At: 1 << 20})
			p.target.waitHeld(t, upID, 10*time.Second)

			a := p.hub
			if victim == "site" {
				a = p.site
			}
			a.signal(t, syscall.SIGKILL)
			if code := a.waitExit(t, 5*time.Second); code != -1 {
				t.Fatalf("%s exited with %d, want killed by SIGKILL", victim, code)
			}
			rd := faultWait(t, down, 20*time.Second)
			if rd.ID != id {
				t.Fatalf("result for transfer %d, want %d", rd.ID, id)
			}
			faultExpectReset(t, p.target, rd, true)
			ru := faultWait(t, up, 20*time.Second)
			faultExpectReset(t, p.target, ru, false)
		})
	}
}
