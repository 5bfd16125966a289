package report

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Metric keys, shared by the runner and the report.
const (
	Gbps       = "gbit_s"         // bulk throughput, Gbit/s (10^9 bits)
	RPS        = "req_s"          // requests per second
	P50        = "p50_ms"         // median latency, ms
	P99        = "p99_ms"         // 99th percentile latency, ms
	TPS        = "tps"            // pgbench transactions per second
	CPUPerGB   = "cpu_s_per_gb"   // CPU seconds of both tunnel ends per GB moved
	CPUPerReq  = "cpu_us_per_req" // CPU µs of both tunnel ends per request (or pgbench transaction)
	RSSIdle    = "rss_idle_mib"   // RSS of both ends, idle, MiB
	RSS1k      = "rss_1k_mib"     // ... with 1,000 connections held
	RSS10k     = "rss_10k_mib"    // ... with 10,000 connections held
	KiBPer1k   = "kib_per_conn_1k"
	KiBPer10k  = "kib_per_conn_10k"
	higher     = true
	lowerIsBet = false
)

// MetricDef is how a metric is shown.
type MetricDef struct {
	Key    string
	Label  string
	Digits int  // decimals; -1 picks from the size
	Higher bool // higher is better
}

// ScenarioDef is one scenario of the benchmark and the metrics it reports.
type ScenarioDef struct {
	Key     string
	Label   string
	Metrics []MetricDef
}

// Scenario keys.
const (
	Bulk1         = "bulk-1"
	Bulk8         = "bulk-8"
	ShortC1       = "short-c1"
	ShortC32      = "short-c32"
	KeepAliveC1   = "keepalive-c1"
	KeepAliveC32  = "keepalive-c32"
	KeepAliveLoad = "keepalive-5k-c8" // latency under load: a fixed 5,000 req/s over 8 connections
	PgbenchC1     = "pgbench-c1"
	PgbenchC8     = "pgbench-c8"
	Memory        = "memory"
	Link40ms      = "link-40ms"
)

var httpMetrics = []MetricDef{
	{RPS, "req/s", 0, higher},
	{P50, "p50 ms", 3, lowerIsBet},
	{P99, "p99 ms", 3, lowerIsBet},
	{CPUPerReq, "CPU µs per req", -1, lowerIsBet},
}

// loadMetrics are the latency-under-load scenario's: the rate is fixed, so
// latency is the result and req/s only shows the rate was kept.
var loadMetrics = []MetricDef{
	{P50, "p50 ms", 3, lowerIsBet},
	{P99, "p99 ms", 3, lowerIsBet},
	{RPS, "req/s achieved", 0, higher},
	{CPUPerReq, "CPU µs per req", -1, lowerIsBet},
}

var pgbenchMetrics = []MetricDef{
	{TPS, "transactions/s", 0, higher},
	{CPUPerReq, "CPU µs per transaction", -1, lowerIsBet},
}

// Scenarios is the table order.
var Scenarios = []ScenarioDef{
	{Bulk1, "bulk, 1 stream", []MetricDef{{Gbps, "Gbit/s", 2, higher}, {CPUPerGB, "CPU s per GB", 2, lowerIsBet}}},
	{Bulk8, "bulk, 8 streams", []MetricDef{{Gbps, "Gbit/s", 2, higher}, {CPUPerGB, "CPU s per GB", 2, lowerIsBet}}},
	{ShortC1, "new conn per request, c=1", httpMetrics},
	{ShortC32, "new conn per request, c=32", httpMetrics},
	{KeepAliveC1, "keep-alive, c=1", httpMetrics},
	{KeepAliveC32, "keep-alive, c=32", httpMetrics},
	{KeepAliveLoad, "keep-alive at 5,000 req/s, c=8", loadMetrics},
	{PgbenchC1, "pgbench -S, c=1", pgbenchMetrics},
	{PgbenchC8, "pgbench -S, c=8", pgbenchMetrics},
	{Memory, "memory", []MetricDef{
		{RSSIdle, "RSS idle, MiB", 1, lowerIsBet},
		{RSS1k, "RSS 1,000 conns, MiB", 1, lowerIsBet},
		{RSS10k, "RSS 10,000 conns, MiB", 1, lowerIsBet},
		{KiBPer1k, "KiB per conn (1,000)", 1, lowerIsBet},
		{KiBPer10k, "KiB per conn (10,000)", 1, lowerIsBet},
	}},
	{Link40ms, "40 ms link, 1 stream", []MetricDef{{Gbps, "Gbit/s", 3, higher}}},
}

// Target is one goal of the performance issue: Postern's advantage over
// the better peer (or over direct TCP) in one metric.
type Target struct {
	Scenario, Metric string
	Label            string
	Goal             float64 // advantage wanted: ≥ Goal
	VsDirect         bool    // compare with direct TCP instead of the peers
}

// Targets are the performance issue's goals, each against the better of
// stunnel and HAProxy in the same run (the 40 ms link against direct TCP).
// Advantage is Postern/peer for higher-is-better metrics and peer/Postern
// for lower-is-better ones, so "memory ≤ 0.4×" is an advantage of ≥ 2.5.
var Targets = []Target{
	{Bulk1, Gbps, "bulk, 1 stream (Gbit/s)", 1.3, false},
	{ShortC32, RPS, "new conn per request, c=32 (req/s)", 9, false},
	{KeepAliveC1, RPS, "keep-alive, c=1 (req/s)", 1.35, false},
	{KeepAliveC32, RPS, "keep-alive, c=32 (req/s)", 1.2, false},
	{Memory, KiBPer10k, "memory per held connection (10,000)", 2.5, false},
	{PgbenchC1, TPS, "pgbench -S, c=1 (transactions/s)", 1.15, false},
	{PgbenchC8, TPS, "pgbench -S, c=8 (transactions/s)", 1.35, false},
	{Link40ms, Gbps, "40 ms link vs direct TCP (Gbit/s)", 0.8, true},
}

// TargetCheck is a target measured.
type TargetCheck struct {
	Label     string  `json:"label"`
	Scenario  string  `json:"scenario"`
	Metric    string  `json:"metric"`
	Postern   float64 `json:"postern"`
	Reference string  `json:"reference"` // the tunnel compared with
	Other     float64 `json:"reference_value"`
	Ratio     float64 `json:"ratio"` // Postern / reference, as measured
	Goal      string  `json:"goal"`  // as the issue writes it: "≥ 1.3×", "≤ 0.5×"
	Met       *bool   `json:"met"`   // nil when not measured
}

func metricDef(scenario, metric string) MetricDef {
	for _, s := range Scenarios {
		if s.Key != scenario {
			continue
		}
		for _, m := range s.Metrics {
			if m.Key == metric {
				return m
			}
		}
	}
	return MetricDef{Key: metric, Label: metric, Digits: -1, Higher: true}
}

// Best returns the better peer's median for a metric and its name.
func (r *Report) Best(scenario, metric string) (string, float64) {
	def := metricDef(scenario, metric)
	best, bestV := "", math.NaN()
	for _, p := range Peers {
		v := r.Median(p, scenario, metric)
		if math.IsNaN(v) {
			continue
		}
		if best == "" || (def.Higher && v > bestV) || (!def.Higher && v < bestV) {
			best, bestV = p, v
		}
	}
	return best, bestV
}

// Advantage is how many times better a is than b: a/b when higher is
// better, b/a when lower is.
func Advantage(higherBetter bool, a, b float64) float64 {
	if higherBetter {
		return a / b
	}
	return b / a
}

// Check measures every target.
func (r *Report) Check() []TargetCheck {
	var out []TargetCheck
	for _, t := range Targets {
		t.Metric, t.Label = r.measured(t.Scenario, t.Metric, t.Label)
		def := metricDef(t.Scenario, t.Metric)
		c := TargetCheck{Label: t.Label, Scenario: t.Scenario, Metric: t.Metric}
		c.Postern = r.Median(Postern, t.Scenario, t.Metric)
		if t.VsDirect {
			c.Reference, c.Other = Direct, r.Median(Direct, t.Scenario, t.Metric)
		} else {
			c.Reference, c.Other = r.Best(t.Scenario, t.Metric)
		}
		c.Ratio = c.Postern / c.Other
		c.Goal = goalText(def.Higher, t.Goal)
		if !math.IsNaN(c.Ratio) && !math.IsInf(c.Ratio, 0) {
			met := Advantage(def.Higher, c.Postern, c.Other) >= t.Goal
			c.Met = &met
		}
		out = append(out, c)
	}
	return out
}

// goalText writes a goal as the issue does: "≥ 1.15×" for a
// higher-is-better metric, "≤ 0.4×" (the inverse advantage) for a
// lower-is-better one; at most two decimals, no trailing zeros.
func goalText(higher bool, goal float64) string {
	op, v := "≥", goal
	if !higher {
		op, v = "≤", 1/goal
	}
	return fmt.Sprintf("%s %s×", op, strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64))
}

// measured returns the metric a target is checked on: memory per
// connection at 10,000 held, or at 1,000 when the run held no more (quick
// mode).
func (r *Report) measured(scenario, metric, label string) (string, string) {
	if metric == KiBPer10k && math.IsNaN(r.Median(Postern, scenario, metric)) && !math.IsNaN(r.Median(Postern, scenario, KiBPer1k)) {
		return KiBPer1k, strings.Replace(label, "10,000", "1,000", 1)
	}
	return metric, label
}

// TargetsTable shows each target, the measured ratio and whether it is met.
func (r *Report) TargetsTable() string {
	var b strings.Builder
	b.WriteString("| target | Postern | compared with | ratio | goal | met |\n| --- | ---: | --- | ---: | ---: | --- |\n")
	for _, c := range r.Check() {
		def := metricDef(c.Scenario, c.Metric)
		met := "not measured"
		if c.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*c.Met]
		}
		ref := "–"
		if c.Reference != "" {
			ref = fmt.Sprintf("%s %s", c.Reference, formatNum(c.Other, def.Digits))
		}
		ratio := "–"
		if !math.IsNaN(c.Ratio) && !math.IsInf(c.Ratio, 0) {
			ratio = fmt.Sprintf("%.2f×", c.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.Label, formatNum(c.Postern, def.Digits), ref, ratio, c.Goal, met)
	}
	return b.String()
}

// MarshalJSON writes a value that was not measured (NaN) as null.
func (c TargetCheck) MarshalJSON() ([]byte, error) {
	type alias TargetCheck
	return json.Marshal(struct {
		alias
		Postern *float64 `json:"postern"`
		Other   *float64 `json:"reference_value"`
		Ratio   *float64 `json:"ratio"`
	}{alias(c), num(c.Postern), num(c.Other), num(c.Ratio)})
}
