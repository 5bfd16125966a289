package report

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		runs          []float64
		med, min, max float64
	}{
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{5, math.NaN()}, 5, 5, 5},
	} {
		s := Summarize(tc.runs)
		if s.Median != tc.med || s.Min != tc.min || s.Max != tc.max {
			t.Errorf("Summarize(%v) = %+v", tc.runs, s)
		}
	}
	if s := Summarize(nil); !math.IsNaN(s.Median) {
		t.Errorf("Summarize(nil) median = %v, want NaN", s.Median)
	}
}

func sample() *Report {
	r := &Report{Generated: "2026-01-02T03:04:05Z", Mode: "quick"}
	r.Add(Postern, Bulk1, Gbps, []float64{8, 9, 10})
	r.Add(Stunnel, Bulk1, Gbps, []float64{4})
	r.Add(HAProxy, Bulk1, Gbps, []float64{5})
	r.Add(Postern, Memory, KiBPer10k, []float64{20})
	r.Add(Stunnel, Memory, KiBPer10k, []float64{200})
	r.Add(HAProxy, Memory, KiBPer10k, []float64{60})
	r.Add(Postern, KeepAliveC1, RPS, []float64{4000})
	r.Add(HAProxy, KeepAliveC1, RPS, []float64{5000})
	r.Add(Postern, KeepAliveC1, P99, []float64{math.NaN()})
	r.Add(Postern, KeepAliveC1, CPUPerReq, []float64{110, 100, 120})
	r.Add(Direct, PgbenchC1, TPS, []float64{26000})
	r.Add(Postern, PgbenchC1, TPS, []float64{10000, 11000, 12000})
	r.Add(Stunnel, PgbenchC1, TPS, []float64{9000})
	r.Add(HAProxy, PgbenchC1, TPS, []float64{9500})
	r.Add(Postern, PgbenchC1, CPUPerReq, []float64{95})
	r.Add(Postern, PgbenchC8, TPS, []float64{18000})
	r.Add(HAProxy, PgbenchC8, TPS, []float64{20000})
	r.Add(Postern, KeepAliveLoad, P99, []float64{0.5})
	r.Add(Stunnel, KeepAliveLoad, P99, []float64{1.5})
	return r
}

func TestCheckUsesTheBetterPeer(t *testing.T) {
	got := map[string]TargetCheck{}
	for _, c := range sample().Check() {
		got[c.Scenario+"/"+c.Metric] = c
	}
	bulk := got[Bulk1+"/"+Gbps]
	if bulk.Reference != HAProxy || bulk.Ratio != 9.0/5 || bulk.Met == nil || !*bulk.Met {
		t.Errorf("bulk: %+v", bulk)
	}
	mem := got[Memory+"/"+KiBPer10k]
	if mem.Reference != HAProxy || mem.Goal != "≤ 0.4×" || mem.Met == nil || !*mem.Met {
		t.Errorf("memory: %+v (lower is better: 20 vs 60 KiB meets ≤ 0.4×)", mem)
	}
	pg1 := got[PgbenchC1+"/"+TPS]
	if pg1.Reference != HAProxy || pg1.Other != 9500 || pg1.Goal != "≥ 1.15×" || pg1.Met == nil || !*pg1.Met {
		t.Errorf("pgbench c=1: %+v, want met against HAProxy (11000/9500 = 1.16 ≥ 1.15)", pg1)
	}
	pg8 := got[PgbenchC8+"/"+TPS]
	if pg8.Goal != "≥ 1.35×" || pg8.Met == nil || *pg8.Met {
		t.Errorf("pgbench c=8: %+v, want not met (18000 < 20000)", pg8)
	}
	ka := got[KeepAliveC1+"/"+RPS]
	if ka.Met == nil || *ka.Met {
		t.Errorf("keep-alive c=1: %+v, want not met (4000 < 5000)", ka)
	}
	quick := &Report{}
	quick.Add(Postern, Memory, KiBPer1k, []float64{30})
	quick.Add(HAProxy, Memory, KiBPer1k, []float64{57})
	for _, c := range quick.Check() {
		if c.Scenario == Memory && (c.Metric != KiBPer1k || c.Met == nil || *c.Met) {
			t.Errorf("quick run's memory target: %+v, want checked at 1,000 connections and not met (30 > 57×0.4)", c)
		}
	}
	if link := got[Link40ms+"/"+Gbps]; link.Met != nil {
		t.Errorf("40 ms link not measured but Met = %v", *link.Met)
	}
}

func TestMarkdownAndFiles(t *testing.T) {
	r := sample()
	md := r.Markdown()
	for _, want := range []string{
		"| bulk, 1 stream | Gbit/s | – | 9.00 (8.00–10.00) | 4.00 | 5.00 |",
		"| keep-alive, c=1 | CPU µs per req | – | 110 (100–120) | – | – |",
		"| pgbench -S, c=1 | transactions/s | 26,000 | 11,000 (10,000–12,000) | 9,000 | 9,500 |",
		"| pgbench -S, c=1 | CPU µs per transaction | – | 95.0 | – | – |",
		"| keep-alive at 5,000 req/s, c=8 | p99 ms | – | 0.500 | 1.500 | – |",
		"| pgbench -S, c=1 (transactions/s) | 11,000 | haproxy 9,500 | 1.16× | ≥ 1.15× | yes |",
		"| new conn per request, c=32 (req/s) | – | – | – | ≥ 9× | not measured |",
		"1.80×", "**no**"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	js := filepath.Join(dir, "latest.json")
	if err := r.WriteJSON(js); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	if back.Median(Postern, Bulk1, Gbps) != 9 || !math.IsNaN(back.Median(Postern, KeepAliveC1, P99)) {
		t.Errorf("JSON round trip: %+v", back.Entries)
	}
	img := filepath.Join(dir, "chart.png")
	if err := r.WritePNG(img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
}

func TestGoalText(t *testing.T) {
	for _, tc := range []struct {
		higher bool
		goal   float64
		want   string
	}{
		{true, 1.3, "≥ 1.3×"},
		{true, 9, "≥ 9×"},
		{true, 1.15, "≥ 1.15×"},
		{true, 1.35, "≥ 1.35×"},
		{false, 2.5, "≤ 0.4×"},
		{false, 2, "≤ 0.5×"},
		{false, 3, "≤ 0.33×"},
	} {
		if got := goalText(tc.higher, tc.goal); got != tc.want {
			t.Errorf("goalText(%v, %v) = %q, want %q", tc.higher, tc.goal, got, tc.want)
		}
	}
}

// TestTargetsAreTheIssues pins the goals, so a change to them is a
// deliberate one.
func TestTargetsAreTheIssues(t *testing.T) {
	want := map[string]string{
		Bulk1 + "/" + Gbps:       "≥ 1.3×",
		ShortC32 + "/" + RPS:     "≥ 9×",
		KeepAliveC1 + "/" + RPS:  "≥ 1.35×",
		KeepAliveC32 + "/" + RPS: "≥ 1.2×",
		Memory + "/" + KiBPer10k: "≤ 0.4×",
		PgbenchC1 + "/" + TPS:    "≥ 1.15×",
		PgbenchC8 + "/" + TPS:    "≥ 1.35×",
		Link40ms + "/" + Gbps:    "≥ 0.8×",
	}
	got := map[string]string{}
	for _, c := range (&Report{}).Check() {
		got[c.Scenario+"/"+c.Metric] = c.Goal
		if c.Met != nil {
			t.Errorf("%s: nothing measured but Met = %v", c.Label, *c.Met)
		}
	}
	if len(got) != len(want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	for k, g := range want {
		if got[k] != g {
			t.Errorf("target %s: goal %q, want %q", k, got[k], g)
		}
	}
}

// TestReadJSONUpgradesCPUPer1k reads a result written when CPU per request
// was CPU seconds per 1,000 requests, and finds it in µs per request.
func TestReadJSONUpgradesCPUPer1k(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.json")
	old := `{"mode":"full","results":[{"tunnel":"postern","scenario":"keepalive-c32","metrics":{
		"req_s":{"median":34000,"min":33000,"max":35000,"runs":[33000,34000,35000]},
		"cpu_s_per_1k":{"median":0.043,"min":0.04,"max":0.05,"runs":[0.04,0.043,0.05]}}}]}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Median(Postern, KeepAliveC32, CPUPerReq); math.Abs(got-43) > 1e-9 {
		t.Errorf("CPU µs per request = %v, want 43", got)
	}
	if e := r.Entry(Postern, KeepAliveC32); len(e.Metrics[CPUPerReq].Runs) != 3 || e.Metrics[oldCPUPer1k].Runs != nil {
		t.Errorf("upgraded metrics: %+v", e.Metrics)
	}
	if got := r.Median(Postern, KeepAliveC32, RPS); got != 34000 {
		t.Errorf("req/s = %v, want 34000 untouched", got)
	}
}
