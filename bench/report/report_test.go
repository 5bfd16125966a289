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
	if mem.Reference != HAProxy || mem.Goal != "≤ 0.5×" || mem.Met == nil || !*mem.Met {
		t.Errorf("memory: %+v (lower is better: 20 vs 60 KiB meets ≤ 0.5×)", mem)
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
			t.Errorf("quick run's memory target: %+v, want checked at 1,000 connections and not met (30 > 57/2)", c)
		}
	}
	if link := got[Link40ms+"/"+Gbps]; link.Met != nil {
		t.Errorf("40 ms link not measured but Met = %v", *link.Met)
	}
}

func TestMarkdownAndFiles(t *testing.T) {
	r := sample()
	md := r.Markdown()
	for _, want := range []string{"| bulk, 1 stream | Gbit/s | – | 9.00 (8.00–10.00) | 4.00 | 5.00 |", "1.80×", "**no**", "not measured"} {
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
