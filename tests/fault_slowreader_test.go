//go:build unix

package tests

import (
	"testing"
	"time"
)

// TestFaultSlowReader: the application reads far slower than the tunnel
// can carry, on a stream_window of 256 KiB. Transfers must arrive whole
// with a clean end at both the application and the target, however slowly
// the application reads:
//
//   - "throttled": a download of 4 MiB (16 windows) read at 400 KiB/s; the
//     application half-closes after reading everything.
//   - "paused": the application half-closes right after its request, and
//     after its first read stops reading for 65 s — longer than the
//     multiplexer's 60 s stream close timeout. When all that is left of
//     the answer fits in the stream window and the socket buffers, the
//     target's agent finishes both directions and closes its stream while
//     the application is paused; what is still buffered on the way must
//     arrive, not be discarded by a stream reset. The socket buffers'
//     size is the kernel's to choose, so 24 transfers of 384 KiB to 6 MiB
//     (steps of 256 KiB, one window) run at once: some land in that case.
func TestFaultSlowReader(t *testing.T) {
	t.Run("throttled", func(t *testing.T) {
		t.Parallel()
		p := faultStartPair(t, faultPairOptions{tunnel: `stream_window = "256KiB"`})
		r := faultTransfer(p.forward, faultSpec{Down: 4 << 20, Up: 16 << 10, ReadRate: 400 << 10, Timeout: 60 * time.Second})
		if r.Class != faultComplete {
			t.Fatalf("slow reader: %v; want complete", r)
		}
		if tr := p.target.result(t, r.ID, 10*time.Second); tr.Class != faultComplete {
			t.Fatalf("target: slow reader's transfer ended %s (%v); want complete", tr.Class, tr.Err)
		}
		t.Logf("%d bytes read at 400 KiB/s in %s", r.Down, r.Elapsed.Round(time.Millisecond))
	})
	t.Run("paused", func(t *testing.T) {
		t.Parallel()
		p := faultStartPair(t, faultPairOptions{tunnel: `stream_window = "256KiB"`})
		const n = 24
		var chs [n]<-chan faultResult
		for k := range n {
			size := int64(k+1)*256<<10 + 128<<10
			chs[k] = faultStart(p.forward, faultSpec{Down: size, Up: 1 << 10, ReadPause: 65 * time.Second, EarlyClose: true, Timeout: 120 * time.Second})
		}
		for k := range n {
			r := faultWait(t, chs[k], 130*time.Second)
			if r.Class != faultComplete {
				t.Errorf("paused reader, %d KiB: %v; want complete", (k+1)*256+128, r)
			}
		}
	})
}
