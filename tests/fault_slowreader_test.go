//go:build unix

package tests

import (
	"testing"
	"time"
)

// TestFaultSlowReader: the application reads far slower than the tunnel
// can carry, on a stream_window of 256 KiB, a download of 4 MiB (16
// windows): the sender finishes and half-closes long before the reader is
// done. The transfer must still arrive whole with a clean end, at both the
// application and the target.
func TestFaultSlowReader(t *testing.T) {
	t.Parallel()
	p := faultStartPair(t, faultPairOptions{tunnel: `stream_window = "256KiB"`})
	const size = 4 << 20
	r := faultTransfer(p.forward, faultSpec{Down: size, Up: 64 << 10, ReadRate: 400 << 10, Timeout: 60 * time.Second})
	if r.Class != faultComplete {
		t.Fatalf("slow reader: %v; want complete", r)
	}
	if tr := p.target.result(t, r.ID, 10*time.Second); tr.Class != faultComplete {
		t.Fatalf("target: slow reader's transfer ended %s (%v); want complete", tr.Class, tr.Err)
	}
	t.Logf("%d bytes read at 400 KiB/s in %s", r.Down, r.Elapsed.Round(time.Millisecond))
}
