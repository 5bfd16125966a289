//go:build unix

package tests

import (
	"testing"
	"time"
)

// TestFaultTargetReset: the target resets its connection (RST) in the
// middle of a download and of an upload; the application must see
// ECONNRESET, not a clean end, and an unrelated transfer on the same
// tunnel must still complete whole.
func TestFaultTargetReset(t *testing.T) {
	t.Parallel()
	p := faultStartPair(t, faultPairOptions{})
	down := faultStart(p.forward, faultSpec{Down: 4 << 20, Action: faultActReset, At: 512 << 10, Timeout: 30 * time.Second})
	up := faultStart(p.forward, faultSpec{Up: 4 << 20, Action: faultActReset, At: 512 << 10, Timeout: 30 * time.Second})
	both := faultStart(p.forward, faultSpec{Up: 2 << 20, Down: 2 << 20, Timeout: 30 * time.Second})
	for name, ch := range map[string]<-chan faultResult{"download": down, "upload": up} {
		r := faultWait(t, ch, 40*time.Second)
		if r.Class != faultReset {
			t.Errorf("%s cut by the target's reset: %v; want cut-and-reset (ECONNRESET)", name, r)
		}
	}
	if r := faultWait(t, both, 40*time.Second); r.Class != faultComplete {
		t.Errorf("transfer beside the reset ones: %v; want complete", r)
	}
}
