//go:build linux

// Command pbench is Postern's side-by-side benchmark: direct TCP, Postern,
// stunnel and HAProxy on loopback, with the same certificates, targets
// (an HTTP target, iperf3, PostgreSQL for pgbench) and load. bench/bench.sh installs the tools and runs it; see
// docs/performance.md.
//
//	pbench run [-quick] [-bin FILE] [-out DIR] [-tunnels LIST] [-scenarios LIST]
//	pbench report [-in FILE] [-out DIR]    redraw the table and chart from a JSON result
//	pbench serve -addr HOST:PORT           the HTTP target (run by pbench run)
//	pbench load -addr HOST:PORT [-mode short|keepalive] [-c N] [-d 5s] [-rate R]   one load run, by hand
//	pbench hold -addr HOST:PORT -n N [-for 30s]   hold N idle connections, by hand
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/postern-tunnel/postern/bench/loadgen"
	"github.com/postern-tunnel/postern/bench/report"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pbench run|report [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:], os.Stdout, os.Stderr)
	case "report":
		err = cmdReport(os.Args[2:], os.Stdout)
	case "serve":
		err = cmdServe(os.Args[2:])
	case "load":
		err = cmdLoad(os.Args[2:], os.Stdout)
	case "hold":
		err = cmdHold(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q (run, report)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pbench: %v\n", err)
		os.Exit(1)
	}
}

type runFlags struct {
	quick       bool
	bin         string
	out         string
	work        string
	tunnels     string
	scenarios   string
	linkNoDelay bool
}

var allScenarios = []string{report.Memory, report.ShortC1, report.ShortC32, report.KeepAliveC1, report.KeepAliveC32,
	report.KeepAliveLoad, report.PgbenchC1, report.PgbenchC8, report.Bulk1, report.Bulk8, report.Link40ms}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	var f runFlags
	fs := flag.NewFlagSet("pbench run", flag.ContinueOnError)
	fs.BoolVar(&f.quick, "quick", false, "one short run of each scenario, 1,000 held connections (under 2 minutes)")
	fs.StringVar(&f.bin, "bin", "bench/.bin/postern", "postern `binary` to measure")
	fs.StringVar(&f.out, "out", "bench/results", "`folder` for latest.json, latest.md and chart.png")
	fs.StringVar(&f.work, "work", "", "work `folder` for certificates, configs and logs (default: a temporary one, removed after)")
	fs.StringVar(&f.tunnels, "tunnels", strings.Join(report.Tunnels, ","), "comma-separated `list` of tunnels")
	fs.StringVar(&f.scenarios, "scenarios", strings.Join(allScenarios, ","), "comma-separated `list` of scenarios")
	fs.BoolVar(&f.linkNoDelay, "link-no-delay", false, "run the 40 ms link scenario without a delay (checks its wiring only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := &runner{set: modeSettings(f.quick), bin: f.bin, progress: stderr, linkNoDelay: f.linkNoDelay,
		tunnels: split(f.tunnels), scenarios: map[string]bool{}}
	for _, s := range split(f.scenarios) {
		r.scenarios[s] = true
	}
	for _, t := range r.tunnels {
		if !contains(report.Tunnels, t) {
			return fmt.Errorf("unknown tunnel %q (one of %s)", t, strings.Join(report.Tunnels, ", "))
		}
	}
	for s := range r.scenarios {
		if !contains(allScenarios, s) {
			return fmt.Errorf("unknown scenario %q (one of %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	if f.work == "" {
		dir, err := os.MkdirTemp("", "pbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f.work = dir
	} else if err := os.MkdirAll(f.work, 0o755); err != nil {
		return err
	}
	r.dir = f.work
	r.fileLimit = raiseFileLimit(1 << 20)
	r.rep = &report.Report{}
	r.fitHolds()
	*r.rep = report.Report{Notes: r.rep.Notes,
		Generated: time.Now().UTC().Format(time.RFC3339),
		Mode:      r.set.mode,
		Machine:   machine(),
		Versions:  versions(r.bin),
		Settings:  r.set.describe(),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := r.run(ctx); err != nil {
		return err
	}
	r.rep.Settings = append(r.rep.Settings, fmt.Sprintf("run took %s", time.Since(start).Round(time.Second)))
	if err := r.writeResults(f.out); err != nil {
		return err
	}
	fmt.Fprint(stdout, r.rep.Markdown())
	fmt.Fprintf(stdout, "\nwritten: %s/latest.json, latest.md, chart.png (%s)\n", f.out, time.Since(start).Round(time.Second))
	return nil
}

func cmdReport(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pbench report", flag.ContinueOnError)
	in := fs.String("in", "bench/results/latest.json", "result `file`")
	out := fs.String("out", "bench/results", "`folder` for latest.md and chart.png")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep, err := report.ReadJSON(*in)
	if err != nil {
		return err
	}
	r := &runner{rep: rep}
	if err := r.writeResults(*out); err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Markdown())
	return nil
}

// cmdServe runs the HTTP target in its own process, so the load generator
// and the target each have their own open-file budget.
func cmdServe(args []string) error {
	fs := flag.NewFlagSet("pbench serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "`address` to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseFileLimit(1 << 20)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var srv loadgen.Server
	return srv.Serve(ln)
}

// cmdLoad runs one request/response load by hand (for profiling).
func cmdLoad(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pbench load", flag.ContinueOnError)
	var l loadgen.Load
	fs.StringVar(&l.Addr, "addr", "", "`address` to send requests to")
	mode := fs.String("mode", "keepalive", "short (a connection per request) or keepalive")
	fs.IntVar(&l.Concurrency, "c", 1, "concurrent connections")
	fs.DurationVar(&l.Duration, "d", 5*time.Second, "counted duration")
	fs.DurationVar(&l.Warmup, "warmup", 500*time.Millisecond, "warm-up, not counted")
	fs.Float64Var(&l.Rate, "rate", 0, "total `req/s`, paced open-loop over the connections (0: as fast as answers come)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l.Mode = loadgen.Mode(*mode)
	res, err := loadgen.Run(context.Background(), l)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%.0f req/s  p50 %.3f ms  p99 %.3f ms  errors %d (%v)\n", res.RPS(),
		ms(res.Latency.Quantile(0.5)), ms(res.Latency.Quantile(0.99)), res.Errors, res.FirstError)
	return nil
}

// cmdHold opens n connections through addr and holds them (for looking at
// a tunnel's memory by hand).
func cmdHold(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pbench hold", flag.ContinueOnError)
	addr := fs.String("addr", "", "`address` to connect to")
	n := fs.Int("n", 1000, "connections")
	d := fs.Duration("for", 30*time.Second, "how long to hold them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseFileLimit(1 << 20)
	conns, err := loadgen.Hold(context.Background(), *addr, *n, 32)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "holding %d connections for %s\n", len(conns), *d)
	time.Sleep(*d)
	loadgen.CloseAll(conns)
	return nil
}

func (s settings) describe() []string {
	return []string{
		fmt.Sprintf("%d run(s) per scenario, median reported with min–max; the runs of a scenario visit every tunnel in turn (all tunnels up at once); memory: %d run(s) on fresh tunnel ends", s.reps, s.memReps),
		fmt.Sprintf("request/response: %s warm-up + %s counted per run; %d-byte response body", s.httpWarm, s.httpDur, loadgen.BodySize),
		fmt.Sprintf("latency under load: %d req/s in all over %d keep-alive connections, paced open-loop (latency counted from when each request was due)", loadRate, loadConc),
		fmt.Sprintf("pgbench: -i -s %d once on a throwaway cluster on loopback (fsync off), then -S (select-only) for %s per run at c=1 and c=8", pgScale, s.pg),
		"CPU: utime + stime of both tunnel ends' processes from /proc/PID/stat over a run (warm-up included), per request, pgbench transaction, or GB moved",
		fmt.Sprintf("bulk (iperf3, client → server): %s with 1 stream, %s with 8", s.bulk1, s.bulk8),
		fmt.Sprintf("connections held: %v; 40 ms link: %s per run", s.holds, s.link),
		fmt.Sprintf("Postern: stream_window %s, log level warn; all tunnels TLS 1.3 AES-128-GCM, ECDSA P-256, mutual verification", s.window),
	}
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// machine describes the CPU, cores, memory and kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kib)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kib)/(1<<20))
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d cores%s%s, %s", model, runtime.NumCPU(), mem, kernel, runtime.Version())
}

// versions are the first lines of each tool's version output.
func versions(bin string) []string {
	var out []string
	for _, argv := range [][]string{{bin, "version"}, {"stunnel4", "-version"}, {"haproxy", "-v"}, {"iperf3", "-v"}} {
		b, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && !strings.HasPrefix(line, "Initializing") {
				out = append(out, line)
				break
			}
		}
	}
	return out
}
