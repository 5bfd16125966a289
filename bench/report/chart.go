package report

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

// chartItem is one group of bars: Postern's advantage over each peer in
// one metric (higher is better), and the goal when the issue sets one.
type chartItem struct {
	label    [2]string
	scenario string
	metric   string
	vsDirect bool
}

var chartItems = []chartItem{
	{[2]string{"bulk", "1 stream"}, Bulk1, Gbps, false},
	{[2]string{"bulk", "8 streams"}, Bulk8, Gbps, false},
	{[2]string{"new conn", "c=1"}, ShortC1, RPS, false},
	{[2]string{"new conn", "c=32"}, ShortC32, RPS, false},
	{[2]string{"keepalive", "c=1"}, KeepAliveC1, RPS, false},
	{[2]string{"keepalive", "c=32"}, KeepAliveC32, RPS, false},
	{[2]string{"p99 at", "5k/s c=8"}, KeepAliveLoad, P99, false},
	{[2]string{"pgbench", "c=1"}, PgbenchC1, TPS, false},
	{[2]string{"pgbench", "c=8"}, PgbenchC8, TPS, false},
	{[2]string{"memory", "per conn"}, Memory, KiBPer10k, false},
	{[2]string{"CPU/GB", "1 stream"}, Bulk1, CPUPerGB, false},
	{[2]string{"CPU/req", "ka c=1"}, KeepAliveC1, CPUPerReq, false},
	{[2]string{"CPU/txn", "pgb c=1"}, PgbenchC1, CPUPerReq, false},
	{[2]string{"40ms link", "vs direct"}, Link40ms, Gbps, true},
}

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colText       = color.RGBA{30, 30, 30, 255}
	colGrid       = color.RGBA{225, 225, 225, 255}
	colAxis       = color.RGBA{90, 90, 90, 255}
	colGoal       = color.RGBA{200, 30, 30, 255}
	barColors     = map[string]color.RGBA{
		Stunnel: {66, 133, 204, 255},
		HAProxy: {236, 140, 40, 255},
		Direct:  {120, 120, 120, 255},
	}
)

type canvas struct{ *image.RGBA }

func (c canvas) fill(x0, y0, x1, y1 int, col color.RGBA) {
	if x0 > x1 {
		x0, x1 = x1, x0
	}
	if y0 > y1 {
		y0, y1 = y1, y0
	}
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// text draws s with its top-left corner at (x, y), scale pixels per dot.
func (c canvas) text(x, y, scale int, s string, col color.RGBA) {
	for _, r := range s {
		g := glyph(r)
		for cx, bits := range g {
			for cy := range 7 {
				if bits&(1<<cy) != 0 {
					c.fill(x+cx*scale, y+cy*scale, x+(cx+1)*scale, y+(cy+1)*scale, col)
				}
			}
		}
		x += 6 * scale
	}
}

func textWidth(s string, scale int) int { return len([]rune(s)) * 6 * scale }

// WritePNG draws Postern's advantage over stunnel and HAProxy (and over
// direct TCP for the 40 ms link) per scenario, on a log scale, with the
// issue's goals as red marks.
func (r *Report) WritePNG(path string) error {
	const (
		w, h           = 1800, 560
		left, right    = 80, 20
		top, bottom    = 70, 90
		scale          = 2
		barW, barGap   = 30, 4
		plotH          = h - top - bottom
		legendY        = 40
		goalHalfExtent = 40
	)
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(0, 0, w, h, colBackground)
	c.text(left, 12, scale, fmt.Sprintf("Postern advantage over each tunnel (x, higher is better; log scale) - %s run %s", r.Mode, shortDate(r.Generated)), colText)

	lo, hi := -2.0, 3.0 // log2 range: 0.25x .. 8x, widened to fit the data
	type bar struct {
		peer string
		adv  float64
	}
	groups := make([][]bar, len(chartItems))
	goals := make([]float64, len(chartItems))
	for i, it := range chartItems {
		it.metric, _ = r.measured(it.scenario, it.metric, "")
		def := metricDef(it.scenario, it.metric)
		p := r.Median(Postern, it.scenario, it.metric)
		peers := Peers
		if it.vsDirect {
			peers = []string{Direct}
		}
		for _, peer := range peers {
			v := r.Median(peer, it.scenario, it.metric)
			a := Advantage(def.Higher, p, v)
			if math.IsNaN(a) || math.IsInf(a, 0) || a <= 0 {
				continue
			}
			groups[i] = append(groups[i], bar{peer, a})
			lo = math.Min(lo, math.Floor(math.Log2(a)-0.3))
			hi = math.Max(hi, math.Ceil(math.Log2(a)+0.3))
		}
		for _, t := range Targets {
			if t.Scenario == it.scenario && t.Metric == it.metric {
				goals[i] = t.Goal
				// Keep the goal mark inside the plot (9× is above the
				// default 8×).
				lo = math.Min(lo, math.Floor(math.Log2(t.Goal)-0.3))
				hi = math.Max(hi, math.Ceil(math.Log2(t.Goal)+0.3))
			}
		}
	}
	yOf := func(adv float64) int {
		f := (math.Log2(adv) - lo) / (hi - lo)
		return top + plotH - int(math.Round(f*float64(plotH)))
	}
	for e := lo; e <= hi; e++ {
		y := yOf(math.Exp2(e))
		col := colGrid
		if e == 0 {
			col = colAxis
		}
		c.fill(left, y, w-right, y+1+btoi(e == 0), col)
		label := fmt.Sprintf("%gx", math.Exp2(e))
		c.text(left-8-textWidth(label, scale), y-7, scale, label, colText)
	}
	// Legend.
	lx := left
	for _, peer := range []string{Stunnel, HAProxy, Direct} {
		c.fill(lx, legendY, lx+14, legendY+14, barColors[peer])
		name := "vs " + peer
		c.text(lx+20, legendY, scale, name, colText)
		lx += 20 + textWidth(name, scale) + 30
	}
	c.fill(lx, legendY+6, lx+24, legendY+9, colGoal)
	c.text(lx+30, legendY, scale, "goal", colText)

	slot := (w - left - right) / len(chartItems)
	base := yOf(1)
	for i, it := range chartItems {
		cx := left + slot*i + slot/2
		n := len(groups[i])
		x := cx - (n*barW+(n-1)*barGap)/2
		for _, b := range groups[i] {
			y := yOf(b.adv)
			c.fill(x, y, x+barW, base, barColors[b.peer])
			label := fmt.Sprintf("%.1f", b.adv)
			if b.adv < 1 {
				label = fmt.Sprintf("%.2f", b.adv)
			}
			ly := y - 12
			if b.adv < 1 {
				ly = y + 4
			}
			c.text(x+barW/2-textWidth(label, 1)/2, ly, 1, label, colText)
			x += barW + barGap
		}
		if n == 0 {
			c.text(cx-textWidth("n/a", scale)/2, base-20, scale, "n/a", colAxis)
		}
		if g := goals[i]; g > 0 {
			y := yOf(g)
			c.fill(cx-goalHalfExtent, y-1, cx+goalHalfExtent, y+2, colGoal)
		}
		for k, line := range it.label {
			c.text(cx-textWidth(line, scale)/2, h-bottom+12+k*20, scale, line, colText)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func shortDate(rfc3339 string) string {
	if len(rfc3339) >= 16 {
		return rfc3339[:10] + " " + rfc3339[11:16]
	}
	return rfc3339
}
