// Command swarmreport turns the output of BenchmarkSwarm (agent/swarm_test.go:
// one hub, N partner sites reconnecting at once, then idle) into
// bench/results/swarm.md, and links it from latest.md. bench/swarm.sh runs
// the benchmark and then this; see docs/scaling.md.
//
//	swarmreport [-mode full|quick] [-failed N] [-note WORDS] [-out FILE] [-latest FILE] < go-test-output
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// run is one BenchmarkSwarm result: its partners and its metrics by unit.
type run struct {
	n       int
	metrics map[string]float64
}

// parse reads go test -bench output: the cpu line, and each
// BenchmarkSwarm/n=N/... line's metrics (value-unit pairs after the
// iteration count).
func parse(r io.Reader) (runs []run, cpu string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if c, ok := strings.CutPrefix(line, "cpu: "); ok {
			cpu = strings.TrimSpace(c)
			continue
		}
		if !strings.HasPrefix(line, "BenchmarkSwarm/n=") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			return nil, "", fmt.Errorf("benchmark line %q: want a name, a count and value-unit pairs", line)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(f[0], "BenchmarkSwarm/n="), "/")
		n, err := strconv.Atoi(name)
		if err != nil {
			return nil, "", fmt.Errorf("benchmark line %q: partners: %w", line, err)
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, "", fmt.Errorf("benchmark line %q: %s: %w", line, f[i+1], err)
			}
			m[f[i+1]] = v
		}
		runs = append(runs, run{n: n, metrics: m})
	}
	return runs, cpu, sc.Err()
}

// stat is the median of vs and their range, as the tables in docs print
// them: "1,234 (1,100–1,300)", or just the value for one run.
func stat(vs []float64, prec int) string {
	if len(vs) == 0 {
		return "–"
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) == 1 {
		return num(med, prec)
	}
	return fmt.Sprintf("%s (%s–%s)", num(med, prec), num(s[0], prec), num(s[len(s)-1], prec))
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// num prints v with prec decimals and thousands separators.
func num(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	whole, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(whole, "-")
	whole = strings.TrimPrefix(whole, "-")
	for i := len(whole) - 3; i > 0; i -= 3 {
		whole = whole[:i] + "," + whole[i:]
	}
	if neg {
		whole = "-" + whole
	}
	if frac != "" {
		return whole + "." + frac
	}
	return whole
}

// column is one column of the table: a metric and its decimals.
type column struct {
	head, unit string
	prec       int
}

var columns = []column{
	{"handshakes/s", "handshakes/s", 0},
	{"retries", "retries", 0},
	{"hub MiB (idle tunnels)", "MiB", 0},
	{"KiB per tunnel", "KiB/tunnel", 1},
	{"goroutines per tunnel", "goroutines/tunnel", 1},
	{"hub CPU while idle, % of a core", "%core-idle", 2},
	{"status ms", "status-ms", 0},
}

// report is swarm.md.
// failed is the number of runs that did not finish (a partner gave up,
// or the hub failed).
func report(runs []run, failed int, cpu, mode, note string, now time.Time) string {
	byN := map[int][]run{}
	var ns []int
	for _, r := range runs {
		if byN[r.n] == nil {
			ns = append(ns, r.n)
		}
		byN[r.n] = append(byN[r.n], r)
	}
	slices.Sort(ns)
	values := func(n int, unit string) []float64 {
		var vs []float64
		for _, r := range byN[n] {
			if v, ok := r.metrics[unit]; ok {
				vs = append(vs, v)
			}
		}
		return vs
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Postern partner swarm, %s mode, %s\n\n", mode, now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s\n\n", cpuName(cpu), runtime.NumCPU(), runtime.Version())
	if note != "" {
		fmt.Fprintf(&b, "Network: %s\n\n", note)
	}
	b.WriteString("One hub agent with default settings (max_handshakes = 128, keepalive_interval = 10s),\n" +
		"and a child process of N partner sites (a certificate each, from 250 loopback addresses)\n" +
		"dialing it at once, on the same cores: TLS, the multiplexer, one ping. `BenchmarkSwarm`\n" +
		"in agent/swarm_test.go, run by bench/swarm.sh; medians with the range of the runs.\n" +
		"Memory: the hub's heap and stacks with all N up and idle, after a GC, minus before.\n" +
		"Idle CPU: the hub process's user + system time over 20 s of idleness.\n\n")
	b.WriteString("| partners | runs |")
	for _, c := range columns {
		b.WriteString(" " + c.head + " |")
	}
	b.WriteString("\n| ---: | ---: |" + strings.Repeat(" ---: |", len(columns)) + "\n")
	for _, n := range ns {
		fmt.Fprintf(&b, "| %s | %d |", num(float64(n), 0), len(byN[n]))
		for _, c := range columns {
			b.WriteString(" " + stat(values(n, c.unit), c.prec) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\nTargets (issue 14): ")
	var verdicts []string
	if vs := values(10000, "MiB"); len(vs) > 0 {
		verdicts = append(verdicts, fmt.Sprintf("10,000 idle tunnels in ≤ 300 MiB: %s (%s MiB)", met(median(vs) <= 300), num(median(vs), 0)))
	}
	if lo, hi := values(ns[0], "handshakes/s"), values(ns[len(ns)-1], "handshakes/s"); len(ns) > 1 && len(lo) > 0 && len(hi) > 0 {
		ratio := median(hi) / median(lo)
		verdicts = append(verdicts, fmt.Sprintf("handshakes/s flat (within 20 %%) from %s to %s partners: %s (%s at %s, %.0f %% of the rate at %s)",
			num(float64(ns[0]), 0), num(float64(ns[len(ns)-1]), 0), met(ratio >= 0.8), num(median(hi), 0), num(float64(ns[len(ns)-1]), 0), 100*ratio, num(float64(ns[0]), 0)))
	}
	verdicts = append(verdicts, fmt.Sprintf("no partner gave up: %s (%d of %d runs had every partner up)", met(failed == 0), len(runs), len(runs)+failed))
	if vs := values(10000, "%core-idle"); len(vs) > 0 {
		verdicts = append(verdicts, fmt.Sprintf("keepalive CPU for 10,000 idle tunnels ≤ 5 %% of a core: %s (%s %%)", met(median(vs) <= 5), num(median(vs), 2)))
	}
	if len(verdicts) == 0 {
		verdicts = append(verdicts, "measured at 10,000 partners only in full mode")
	}
	b.WriteString(strings.Join(verdicts, "; ") + ".\n")
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// cpuName is go test's cpu line, or what /proc/cpuinfo says.
func cpuName(cpu string) string {
	if cpu != "" {
		return cpu
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

// linkLine is the line latest.md gets, once.
const linkLine = "Partner swarm (one hub, thousands of partners reconnecting, then idle): [swarm.md](swarm.md)"

// link appends linkLine to the file at path unless it is there already.
// A missing file is left missing (the side-by-side run did not write it).
func link(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("link swarm.md from %s: %w", path, err)
	}
	if strings.Contains(string(b), linkLine) {
		return nil
	}
	s := strings.TrimRight(string(b), "\n") + "\n\n" + linkLine + "\n"
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return fmt.Errorf("link swarm.md from %s: %w", path, err)
	}
	return nil
}

func main() {
	mode := flag.String("mode", "full", "`mode` named in the report: full or quick")
	out := flag.String("out", "bench/results/swarm.md", "`file` to write")
	note := flag.String("note", "", "`words` on the network the runs had (bench/swarm.sh: the listen queues)")
	failed := flag.Int("failed", 0, "`runs` of the benchmark that failed (told by bench/swarm.sh)")
	latest := flag.String("latest", "bench/results/latest.md", "`file` to link swarm.md from (left alone if missing)")
	flag.Parse()
	runs, cpu, err := parse(os.Stdin)
	if err == nil && len(runs) == 0 {
		err = errors.New("no BenchmarkSwarm results on standard input: did the benchmark fail?")
	}
	if err == nil {
		err = os.WriteFile(*out, []byte(report(runs, *failed, cpu, *mode, *note, time.Now())), 0o644)
	}
	if err == nil && filepath.Dir(*latest) == filepath.Dir(*out) {
		err = link(*latest)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "swarmreport:", err)
		os.Exit(1)
	}
	fmt.Printf("written: %s\n", *out)
}
