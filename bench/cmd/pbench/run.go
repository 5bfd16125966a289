//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/postern-tunnel/postern/bench/loadgen"
	"github.com/postern-tunnel/postern/bench/report"
)

// settings are the durations and repeats of one mode.
type settings struct {
	mode      string
	reps      int           // repeats of every timed scenario
	memReps   int           // repeats of the memory scenario (each on fresh tunnel ends)
	httpWarm  time.Duration // request/response warm-up, not counted
	httpDur   time.Duration // request/response counted time
	bulk1     time.Duration // one-stream iperf3 run
	bulk8     time.Duration // eight-stream iperf3 run
	link      time.Duration // one stream over the 40 ms link
	pg        time.Duration // one pgbench -S run
	holds     []int         // connections held for the memory scenario, cumulative
	window    string        // Postern stream_window
	budget    time.Duration // the whole run is cut after this
	holdBurst int           // connections opened at once while holding
}

func modeSettings(quick bool) settings {
	if quick {
		return settings{mode: "quick", reps: 1, memReps: 1, httpWarm: 300 * time.Millisecond, httpDur: 1500 * time.Millisecond,
			bulk1: 3 * time.Second, bulk8: 2 * time.Second, link: 4 * time.Second, pg: 2 * time.Second,
			holds: []int{1000}, window: "16MiB", budget: 180 * time.Second, holdBurst: 32}
	}
	return settings{mode: "full", reps: 3, memReps: 1, httpWarm: 500 * time.Millisecond, httpDur: 3 * time.Second,
		bulk1: 10 * time.Second, bulk8: 5 * time.Second, link: 10 * time.Second, pg: 5 * time.Second,
		holds: []int{1000, 10000}, window: "16MiB", budget: 780 * time.Second, holdBurst: 32}
}

// loadRate is the fixed rate of the latency-under-load scenario, over
// loadConc keep-alive connections: well within what every tunnel carries
// here, so its latency shows what a busy but not saturated tunnel adds.
const (
	loadRate = 5000
	loadConc = 8
)

// httpScenarios are the request/response scenarios, in run order. rate 0
// is closed loop (as fast as answers come back).
var httpScenarios = []struct {
	key  string
	mode loadgen.Mode
	conc int
	rate float64
}{
	{report.ShortC1, loadgen.Short, 1, 0},
	{report.ShortC32, loadgen.Short, 32, 0},
	{report.KeepAliveC1, loadgen.KeepAlive, 1, 0},
	{report.KeepAliveC32, loadgen.KeepAlive, 32, 0},
	{report.KeepAliveLoad, loadgen.KeepAlive, loadConc, loadRate},
}

// pgScenarios are the pgbench -S scenarios: clients.
var pgScenarios = []struct {
	key     string
	clients int
}{
	{report.PgbenchC1, 1},
	{report.PgbenchC8, 8},
}

// runner runs the benchmark: the targets, each tunnel in turn, the report.
type runner struct {
	set       settings
	dir       string // work folder: certificates, configs, logs
	bin       string // the postern binary
	tunnels   []string
	scenarios map[string]bool
	progress  io.Writer
	// linkNoDelay runs the link scenario without netem, to check its wiring.
	linkNoDelay bool

	fileLimit uint64 // RLIMIT_NOFILE in force for this process and its children

	certs   certs
	targets routes
	target  *proc      // the HTTP target (pbench serve)
	pg      *pgCluster // the pgbench target; nil when no pgbench scenario runs
	rep     *report.Report
}

// fitHolds lowers the held-connection counts to what the open-file limit
// allows: the client end of a per-connection TLS proxy holds two
// descriptors per connection (plaintext and TLS), so it is the first to
// run out.
func (r *runner) fitHolds() {
	fit := int(r.fileLimit-400) / 2 / 100 * 100
	for i, n := range r.set.holds {
		if n > fit {
			r.set.holds[i] = fit
			r.note("memory: held %d connections instead of %d: the open-file limit here is %d and cannot be raised (a TLS proxy's client end needs 2 descriptors per connection); per-connection figures are computed at %d",
				fit, n, r.fileLimit, fit)
		}
	}
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, "bench: "+format+"\n", args...)
}

func (r *runner) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logf("%s", msg)
	r.rep.Notes = append(r.rep.Notes, msg)
}

func (r *runner) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.set.budget)
	defer cancel()
	var err error
	if r.certs, err = makeCerts(r.bin, r.dir); err != nil {
		return err
	}
	// The targets: the HTTP target (this binary) and iperf3's server.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	if r.target, err = startProc(r.dir, "http-target", self, "serve", "-addr", httpAddr); err != nil {
		return err
	}
	defer r.target.stop()
	if err := waitListening(ctx, httpAddr, 10*time.Second, r.target); err != nil {
		return err
	}
	bulkAddr, err := freeAddr()
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(bulkAddr)
	iperf, err := startProc(r.dir, "iperf3-server", "iperf3", "-s", "-B", host, "-p", port)
	if err != nil {
		return err
	}
	defer iperf.stop()
	if err := waitListening(ctx, bulkAddr, 10*time.Second, iperf); err != nil {
		return err
	}
	r.targets = routes{http: httpAddr, bulk: bulkAddr}
	if r.wantPG() {
		r.logf("starting a throwaway PostgreSQL cluster, pgbench -i -s %d", pgScale)
		if err := r.startPG(ctx); err != nil {
			r.note("pgbench: skipped: %v", err)
			for _, sc := range pgScenarios {
				delete(r.scenarios, sc.key)
			}
		} else {
			defer r.pg.stop()
			r.targets.pg = r.pg.addr
		}
	}

	r.benchTunnels(ctx)
	if r.scenarios[report.Link40ms] && ctx.Err() == nil {
		if err := r.benchLink(ctx); err != nil {
			r.note("%s: %v", report.Link40ms, err)
		}
	}
	return nil
}

func (r *runner) wantPG() bool {
	for _, sc := range pgScenarios {
		if r.scenarios[sc.key] {
			return true
		}
	}
	return false
}

// startPG starts the cluster and fills it.
func (r *runner) startPG(ctx context.Context) error {
	t0 := time.Now()
	pg, err := startPG(ctx)
	if err != nil {
		return err
	}
	if err := pg.initialize(ctx); err != nil {
		pg.stop()
		return err
	}
	r.pg = pg
	r.rep.Versions = append(r.rep.Versions, pg.version())
	as := ""
	if pg.who != "" {
		as = " as user " + pg.who
	}
	r.logf("PostgreSQL on %s%s, filled in %s", pg.addr, as, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

func (r *runner) env() tunnelEnv {
	return tunnelEnv{dir: r.dir, bin: r.bin, certs: r.certs, targets: r.targets, window: r.set.window,
		maxconn: int(r.fileLimit-100) / 2}
}

// timedScenario is one request/response, pgbench or bulk scenario.
type timedScenario struct {
	key       string
	mode      loadgen.Mode  // request/response: how connections are used
	conc      int           // request/response: concurrency
	rate      float64       // request/response: total req/s, 0 for closed loop
	d         time.Duration // bulk: iperf3 duration
	streams   int           // bulk: parallel streams; 0 for the others
	pgClients int           // pgbench: clients; 0 for the others
}

func (r *runner) timedScenarios() []timedScenario {
	var out []timedScenario
	for _, sc := range httpScenarios {
		out = append(out, timedScenario{key: sc.key, mode: sc.mode, conc: sc.conc, rate: sc.rate})
	}
	for _, sc := range pgScenarios {
		out = append(out, timedScenario{key: sc.key, pgClients: sc.clients})
	}
	out = append(out, timedScenario{key: report.Bulk1, d: r.set.bulk1, streams: 1},
		timedScenario{key: report.Bulk8, d: r.set.bulk8, streams: 8})
	var selected []timedScenario
	for _, sc := range out {
		if r.scenarios[sc.key] {
			selected = append(selected, sc)
		}
	}
	return selected
}

// benchTunnels measures memory on fresh tunnel ends of each tunnel in turn,
// then starts every tunnel at once and runs each repeat of each timed
// scenario through all of them in turn, so a machine whose speed drifts
// during the run (a VM with neighbours) drifts for every tunnel alike.
func (r *runner) benchTunnels(ctx context.Context) {
	if r.scenarios[report.Memory] {
		for _, name := range r.tunnels {
			if name == report.Direct {
				continue
			}
			for rep := range r.set.memReps {
				if ctx.Err() != nil {
					break
				}
				if err := r.memory(ctx, name, rep); err != nil {
					r.note("%s memory: %v", name, err)
					break
				}
			}
		}
	}
	var tuns []*tunnel
	defer func() {
		for _, t := range tuns {
			t.stop()
		}
	}()
	for _, name := range r.tunnels {
		t, err := startTunnel(name, r.env())
		if err == nil {
			if err = r.ready(ctx, t); err != nil {
				t.stop()
			}
		}
		if err != nil {
			r.note("%s: %v", name, err)
			continue
		}
		tuns = append(tuns, t)
	}
	pgWarm := false
	for _, sc := range r.timedScenarios() {
		if sc.pgClients > 0 && !pgWarm && r.pg != nil && ctx.Err() == nil {
			// The first run against the cluster would fill its buffers
			// for everyone after it: do that directly, uncounted.
			pgWarm = true
			r.logf("pgbench warm-up: -S -c 8 for %s directly, not counted", r.set.pg)
			if _, err := r.pg.selectOnly(ctx, r.pg.addr, 8, r.set.pg); err != nil {
				r.note("pgbench warm-up: %v", err)
			}
		}
		failed := map[string]bool{}
		for rep := range r.set.reps {
			for _, t := range tuns {
				if failed[t.name] {
					continue
				}
				if ctx.Err() != nil {
					r.note("time budget (%s) used up: %s run %d of %s and later not measured", r.set.budget, sc.key, rep+1, t.name)
					return
				}
				var err error
				switch {
				case sc.streams > 0:
					err = r.bulkRun(ctx, t, sc, rep)
				case sc.pgClients > 0:
					err = r.pgRun(ctx, t, sc, rep)
				default:
					err = r.httpRun(ctx, t, sc, rep)
				}
				if err == nil {
					err = t.alive()
				}
				if err != nil {
					failed[t.name] = true
					r.note("%s %s: %v", t.name, sc.key, err)
				}
			}
		}
	}
}

// ready waits until a request goes through the tunnel end to end.
func (r *runner) ready(ctx context.Context, t *tunnel) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := loadgen.Run(ctx, loadgen.Load{Addr: t.fronts.http, Mode: loadgen.KeepAlive, Concurrency: 1, Duration: 100 * time.Millisecond})
		if err == nil && res.Completed > 0 {
			return nil
		}
		if err == nil {
			err = res.FirstError
		}
		if aerr := t.alive(); aerr != nil {
			return aerr
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("no request got through in 15 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpRun runs one repeat of a request/response scenario through t.
func (r *runner) httpRun(ctx context.Context, t *tunnel, sc timedScenario, rep int) error {
	c0, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	res, err := loadgen.Run(ctx, loadgen.Load{Addr: t.fronts.http, Mode: sc.mode, Concurrency: sc.conc, Rate: sc.rate,
		Warmup: r.set.httpWarm, Duration: r.set.httpDur})
	if err != nil {
		return err
	}
	c1, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	if res.Requests == 0 || res.Errors > res.Completed/100 {
		return fmt.Errorf("%d requests, %d errors (first: %v)", res.Requests, res.Errors, res.FirstError)
	}
	if res.Errors > 0 {
		r.note("%s %s: %d of %d requests failed (first: %v)", t.name, sc.key, res.Errors, res.Completed+res.Errors, res.FirstError)
	}
	p50, p99 := ms(res.Latency.Quantile(0.50)), ms(res.Latency.Quantile(0.99))
	r.addRun(t.name, sc.key, report.RPS, res.RPS())
	r.addRun(t.name, sc.key, report.P50, p50)
	r.addRun(t.name, sc.key, report.P99, p99)
	cpu := ""
	if len(t.ends) > 0 {
		us := cpuMicrosPer(c1-c0, res.Completed)
		r.addRun(t.name, sc.key, report.CPUPerReq, us)
		cpu = fmt.Sprintf("  CPU %.1f µs/req", us)
	}
	r.logf("%-8s %-15s run %d/%d: %8.0f req/s  p50 %.3f ms  p99 %.3f ms%s", t.name, sc.key, rep+1, r.set.reps, res.RPS(), p50, p99, cpu)
	return nil
}

// cpuMicrosPer is CPU seconds spread over n requests, in µs each.
func cpuMicrosPer(cpuSeconds float64, n uint64) float64 {
	return cpuSeconds * 1e6 / float64(n)
}

// pgRun runs one repeat of a pgbench scenario through t.
func (r *runner) pgRun(ctx context.Context, t *tunnel, sc timedScenario, rep int) error {
	if r.pg == nil || t.fronts.pg == "" {
		return fmt.Errorf("no PostgreSQL route")
	}
	c0, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	res, err := r.pg.selectOnly(ctx, t.fronts.pg, sc.pgClients, r.set.pg)
	if err != nil {
		return err
	}
	c1, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	if res.txns == 0 || res.failed > res.txns/100 {
		return fmt.Errorf("pgbench: %d transactions, %d failed", res.txns, res.failed)
	}
	r.addRun(t.name, sc.key, report.TPS, res.tps)
	cpu := ""
	if len(t.ends) > 0 {
		us := cpuMicrosPer(c1-c0, res.txns)
		r.addRun(t.name, sc.key, report.CPUPerReq, us)
		cpu = fmt.Sprintf("  CPU %.1f µs/txn", us)
	}
	r.logf("%-8s %-15s run %d/%d: %8.0f transactions/s%s", t.name, sc.key, rep+1, r.set.reps, res.tps, cpu)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// bulkRun runs one repeat of a bulk scenario through t.
func (r *runner) bulkRun(ctx context.Context, t *tunnel, sc timedScenario, rep int) error {
	c0, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	res, err := runIperfRetry(ctx, nil, t.fronts.bulk, sc.d, sc.streams)
	if err != nil {
		return err
	}
	c1, err := sumOver(t.pids(), cpuSeconds)
	if err != nil {
		return err
	}
	r.addRun(t.name, sc.key, report.Gbps, res.bps/1e9)
	if len(t.ends) > 0 {
		r.addRun(t.name, sc.key, report.CPUPerGB, (c1-c0)/(res.bytes/1e9))
	}
	r.logf("%-8s %-15s run %d/%d: %6.2f Gbit/s", t.name, sc.key, rep+1, r.set.reps, res.bps/1e9)
	return nil
}

// runIperfRetry retries a run the iperf3 server refused because it was
// still finishing the previous one.
func runIperfRetry(ctx context.Context, prefix []string, addr string, d time.Duration, streams int) (bulkResult, error) {
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Second)
		}
		var res bulkResult
		if res, err = runIperf(ctx, prefix, addr, d, streams); err == nil {
			return res, nil
		}
	}
	return bulkResult{}, err
}

// memory starts fresh tunnel ends, measures their RSS idle and then with
// each number of connections held open through them.
func (r *runner) memory(ctx context.Context, name string, rep int) error {
	t, err := startTunnel(name, r.env())
	if err != nil {
		return err
	}
	defer t.stop()
	if err := r.ready(ctx, t); err != nil {
		return err
	}
	base := openFiles(r.target.pid())
	settle := func() { time.Sleep(500 * time.Millisecond) }
	settle()
	idle, err := sumOver(t.pids(), rssKiB)
	if err != nil {
		return err
	}
	r.addRun(name, report.Memory, report.RSSIdle, idle/1024)
	var held []net.Conn
	defer func() {
		loadgen.CloseAll(held)
		r.waitTargetConns(base, 60*time.Second)
	}()
	for _, n := range r.set.holds {
		more, err := loadgen.Hold(ctx, t.fronts.http, n-len(held), r.set.holdBurst)
		if err != nil {
			return fmt.Errorf("holding %d connections: %w", n, err)
		}
		held = append(held, more...)
		settle()
		rss, err := sumOver(t.pids(), rssKiB)
		if err != nil {
			return err
		}
		perConn := (rss - idle) / float64(n)
		if n <= 1000 {
			r.addRun(name, report.Memory, report.RSS1k, rss/1024)
			r.addRun(name, report.Memory, report.KiBPer1k, perConn)
		} else {
			r.addRun(name, report.Memory, report.RSS10k, rss/1024)
			r.addRun(name, report.Memory, report.KiBPer10k, perConn)
		}
		r.logf("%-8s memory         run %d/%d: %5d conns held: RSS both ends %.1f MiB (idle %.1f), %.1f KiB per conn",
			name, rep+1, r.set.memReps, n, rss/1024, idle/1024, perConn)
	}
	return t.alive()
}

// addRun appends one run to a metric's runs and re-summarizes it.
func (r *runner) addRun(tunnel, scenario, metric string, v float64) {
	var runs []float64
	if e := r.rep.Entry(tunnel, scenario); e != nil {
		runs = slices.Clone(e.Metrics[metric].Runs)
	}
	r.rep.Add(tunnel, scenario, metric, append(runs, v))
}

// waitTargetConns waits until the target is back to base open files, so
// the next scenario does not pay for the last one's teardown.
func (r *runner) waitTargetConns(base int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for openFiles(r.target.pid()) > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// writeResults writes latest.json, latest.md and chart.png to dir.
func (r *runner) writeResults(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return errors.Join(
		r.rep.WriteJSON(filepath.Join(dir, "latest.json")),
		os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.rep.Markdown()), 0o644),
		r.rep.WritePNG(filepath.Join(dir, "chart.png")),
	)
}
