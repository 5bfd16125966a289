package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sample = `goos: linux
cpu: Intel(R) Xeon(R) Processor
BenchmarkSwarm/n=1000/keepalive=10s-2   1  20789416610 ns/op  0.2627 %core-idle  29.08 KiB/tunnel  28.40 MiB  2.627 cpu-us/tunnel/s  2.001 goroutines/tunnel  1780 handshakes/s  0 refused-busy  0 retries  14.41 status-ms
BenchmarkSwarm/n=10000/keepalive=10s-2  1  30487411421 ns/op  2.386 %core-idle  29.39 KiB/tunnel  287.0 MiB  2.386 cpu-us/tunnel/s  2.000 goroutines/tunnel  1307 handshakes/s  3774 refused-busy  3774 retries  194.9 status-ms
BenchmarkSwarm/n=1000/keepalive=10s-2   1  20789416610 ns/op  0.3 %core-idle  29.5 KiB/tunnel  28.9 MiB  3 cpu-us/tunnel/s  2.001 goroutines/tunnel  1700 handshakes/s  0 refused-busy  2 retries  15 status-ms
BenchmarkSwarm/n=1000/keepalive=10s-2   1  20789416610 ns/op  0.2 %core-idle  29.1 KiB/tunnel  28.5 MiB  2 cpu-us/tunnel/s  2.001 goroutines/tunnel  1900 handshakes/s  0 refused-busy  1 retries  13 status-ms
PASS
`

// TestReport: the runs are grouped by partners, each figure is the
// median with the range, and the targets are judged from the medians.
func TestReport(t *testing.T) {
	runs, cpu, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 4 || cpu != "Intel(R) Xeon(R) Processor" {
		t.Fatalf("parsed %d runs on %q, want 4 on the Xeon", len(runs), cpu)
	}
	if runs[1].n != 10000 || runs[1].metrics["retries"] != 3774 || runs[1].metrics["%core-idle"] != 2.386 {
		t.Fatalf("second run parsed as %+v", runs[1])
	}
	md := report(runs, 1, cpu, "full", "a private network namespace", time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"| 1,000 | 3 | 1,780 (1,700–1,900) | 1 (0–2) | 28 (28–29) |",
		"| 10,000 | 1 | 1,307 | 3,774 | 287 | 29.4 |",
		"10,000 idle tunnels in ≤ 300 MiB: met (287 MiB)",
		"handshakes/s flat (within 20 %) from 1,000 to 10,000 partners: not met (1,307 at 10,000, 73 % of the rate at 1,000)",
		"no partner gave up: not met (4 of 5 runs had every partner up)",
		"≤ 5 % of a core: met (2.39 %)",
		"2026-12-01T07:00:00Z",
		"Network: a private network namespace",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestParseRejects: a benchmark line that is cut short or carries a value
// that is not a number is an error, not a silently missing figure.
func TestParseRejects(t *testing.T) {
	for _, line := range []string{
		"BenchmarkSwarm/n=1000/keepalive=10s-2 1 20789416610 ns/op 0.26",
		"BenchmarkSwarm/n=1000/keepalive=10s-2 1 20789416610 ns/op x %core-idle",
		"BenchmarkSwarm/n=many/keepalive=10s-2 1 20789416610 ns/op",
	} {
		if _, _, err := parse(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("parse(%q): no error", line)
		}
	}
}

// TestLink: latest.md gets the link to swarm.md once, however many times
// the swarm runs; a missing latest.md stays missing.
func TestLink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "latest.md")
	if err := link(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("link made %s: %v", path, err)
	}
	os.WriteFile(path, []byte("table\n"), 0o644)
	for range 2 {
		if err := link(path); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	if got := string(b); got != "table\n\n"+linkLine+"\n" {
		t.Fatalf("latest.md after two links:\n%s", got)
	}
}
