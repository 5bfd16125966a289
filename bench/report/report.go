// Package report turns the benchmark's repeated measurements into medians
// with their ranges, checks them against the targets of the performance
// issue, and writes them as a Markdown table, JSON and a PNG chart.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

// The tunnels, in table order. Direct is plain TCP: the ceiling.
const (
	Direct  = "direct"
	Postern = "postern"
	Stunnel = "stunnel"
	HAProxy = "haproxy"
)

// Tunnels is the column order of the table.
var Tunnels = []string{Direct, Postern, Stunnel, HAProxy}

// Peers are the tunnels Postern is compared with.
var Peers = []string{Stunnel, HAProxy}

// Stat is one metric measured over repeated runs.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

// Summarize returns the median (the mean of the middle two for an even
// count), min and max of runs. NaNs are dropped.
func Summarize(runs []float64) Stat {
	var v []float64
	for _, r := range runs {
		if !math.IsNaN(r) {
			v = append(v, r)
		}
	}
	if len(v) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], Runs: v}
}

// Entry is one tunnel in one scenario: each metric's median and range.
type Entry struct {
	Tunnel   string          `json:"tunnel"`
	Scenario string          `json:"scenario"`
	Metrics  map[string]Stat `json:"metrics"`
}

// Report is a whole benchmark run.
type Report struct {
	Generated string        `json:"generated"` // RFC 3339
	Mode      string        `json:"mode"`      // "full" or "quick"
	Machine   string        `json:"machine"`
	Versions  []string      `json:"versions"`
	Settings  []string      `json:"settings"` // durations, repeats, tunnel settings
	Notes     []string      `json:"notes"`    // skipped scenarios and why, failures
	Entries   []*Entry      `json:"results"`
	Targets   []TargetCheck `json:"targets"`
}

// Add records the runs of one metric; a scenario's entry is created on
// first use.
func (r *Report) Add(tunnel, scenario, metric string, runs []float64) {
	e := r.Entry(tunnel, scenario)
	if e == nil {
		e = &Entry{Tunnel: tunnel, Scenario: scenario, Metrics: map[string]Stat{}}
		r.Entries = append(r.Entries, e)
	}
	e.Metrics[metric] = Summarize(runs)
}

// Entry returns the entry for tunnel in scenario, or nil.
func (r *Report) Entry(tunnel, scenario string) *Entry {
	for _, e := range r.Entries {
		if e.Tunnel == tunnel && e.Scenario == scenario {
			return e
		}
	}
	return nil
}

// Median is the median of a metric, or NaN when it was not measured.
func (r *Report) Median(tunnel, scenario, metric string) float64 {
	if e := r.Entry(tunnel, scenario); e != nil {
		if s, ok := e.Metrics[metric]; ok {
			return s.Median
		}
	}
	return math.NaN()
}

// WriteJSON writes the report, with the target checks filled in.
func (r *Report) WriteJSON(path string) error {
	r.Targets = r.Check()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read benchmark result %s: %w", path, err)
	}
	r.upgrade()
	return &r, nil
}

// oldCPUPer1k is the key results written before CPU per request was in
// µs: CPU seconds per 1,000 requests.
const oldCPUPer1k = "cpu_s_per_1k"

// upgrade rewrites metrics of older result files in today's units, so
// `pbench report` redraws them alongside new runs: CPU s per 1,000
// requests becomes CPU µs per request (the same figure × 1,000).
func (r *Report) upgrade() {
	for _, e := range r.Entries {
		old, ok := e.Metrics[oldCPUPer1k]
		if !ok {
			continue
		}
		delete(e.Metrics, oldCPUPer1k)
		if _, ok := e.Metrics[CPUPerReq]; ok {
			continue
		}
		runs := make([]float64, len(old.Runs))
		for i, v := range old.Runs {
			runs[i] = v * 1000
		}
		e.Metrics[CPUPerReq] = Summarize(runs)
	}
}

// MarshalJSON writes NaN (not measured) as null, which encoding/json
// cannot do for a float64 by itself.
func (s Stat) MarshalJSON() ([]byte, error) {
	type plain struct {
		Median *float64  `json:"median"`
		Min    *float64  `json:"min"`
		Max    *float64  `json:"max"`
		Runs   []float64 `json:"runs"`
	}
	p := plain{Median: num(s.Median), Min: num(s.Min), Max: num(s.Max), Runs: s.Runs}
	if p.Runs == nil {
		p.Runs = []float64{}
	}
	return json.Marshal(p)
}

// UnmarshalJSON reads null back as NaN.
func (s *Stat) UnmarshalJSON(b []byte) error {
	var p struct {
		Median, Min, Max *float64
		Runs             []float64
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = Stat{Median: unnum(p.Median), Min: unnum(p.Min), Max: unnum(p.Max), Runs: p.Runs}
	return nil
}

func num(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func unnum(f *float64) float64 {
	if f == nil {
		return math.NaN()
	}
	return *f
}

// Markdown renders the whole report: results table, then targets.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Postern benchmark, %s mode, %s\n\n", r.Mode, r.Generated)
	if r.Machine != "" {
		fmt.Fprintf(&b, "Machine: %s\n\n", r.Machine)
	}
	b.WriteString(r.ResultsTable())
	b.WriteString("\n")
	b.WriteString(r.TargetsTable())
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

// ResultsTable is one row per scenario and metric, one column per tunnel:
// "median (min–max)".
func (r *Report) ResultsTable() string {
	var b strings.Builder
	b.WriteString("| scenario | metric |")
	for _, t := range Tunnels {
		fmt.Fprintf(&b, " %s |", t)
	}
	b.WriteString("\n| --- | --- |")
	for range Tunnels {
		b.WriteString(" ---: |")
	}
	b.WriteString("\n")
	for _, sc := range Scenarios {
		for _, m := range sc.Metrics {
			any := false
			row := fmt.Sprintf("| %s | %s |", sc.Label, m.Label)
			for _, t := range Tunnels {
				e := r.Entry(t, sc.Key)
				s, ok := Stat{}, false
				if e != nil {
					s, ok = e.Metrics[m.Key]
				}
				if !ok || math.IsNaN(s.Median) {
					row += " – |"
					continue
				}
				any = true
				row += " " + formatStat(s, m.Digits) + " |"
			}
			if any {
				b.WriteString(row + "\n")
			}
		}
	}
	return b.String()
}

func formatStat(s Stat, digits int) string {
	med := formatNum(s.Median, digits)
	if len(s.Runs) < 2 {
		return med
	}
	return fmt.Sprintf("%s (%s–%s)", med, formatNum(s.Min, digits), formatNum(s.Max, digits))
}

func formatNum(v float64, digits int) string {
	if digits < 0 { // significant figures for small numbers
		switch a := math.Abs(v); {
		case a >= 100:
			digits = 0
		case a >= 10:
			digits = 1
		case a >= 1:
			digits = 2
		default:
			digits = 3
		}
	}
	if math.IsNaN(v) {
		return "–"
	}
	s := fmt.Sprintf("%.*f", digits, v)
	if digits == 0 && math.Abs(v) >= 1000 {
		return thousands(s)
	}
	return s
}

func thousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
