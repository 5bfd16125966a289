//go:build unix

package tests

import (
	"fmt"
	"testing"
	"time"
)

// TestFaultTargetReset: the target resets its connection (RST) in the
// middle of downloads and of uploads; the application must see
// ECONNRESET, not a clean end, and an unrelated transfer on the same
// tunnel must still complete whole. Several of each run at once: while
// the application is still sending, the agent's socket to the target
// takes the reset on whichever of its reads and writes comes first — the
// kernel reports ECONNRESET once, and the other direction then reads a
// plain EOF — so a relay that takes that EOF for a clean end turns some
// of these cuts into clean closes.
func TestFaultTargetReset(t *testing.T) {
	t.Parallel()
	p := faultStartPair(t, faultPairOptions{})
	chs := map[string]<-chan faultResult{}
	for i := range 6 {
		chs[fmt.Sprintf("download %d", i)] = faultStart(p.forward, faultSpec{Down: 4 << 20, Up: 1 << 20, Action: faultActReset, At: 512 << 10, Timeout: 30 * time.Second})
		chs[fmt.Sprintf("upload %d", i)] = faultStart(p.forward, faultSpec{Up: 4 << 20, Action: faultActReset, At: 512 << 10, Timeout: 30 * time.Second})
	}
	both := faultStart(p.forward, faultSpec{Up: 2 << 20, Down: 2 << 20, Timeout: 30 * time.Second})
	for name, ch := range chs {
		r := faultWait(t, ch, 40*time.Second)
		if r.Class != faultReset {
			t.Errorf("%s cut by the target's reset: %v; want cut-and-reset (ECONNRESET)", name, r)
		}
	}
	if r := faultWait(t, both, 40*time.Second); r.Class != faultComplete {
		t.Errorf("transfer beside the reset ones: %v; want complete", r)
	}
}
