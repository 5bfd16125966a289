package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkReload100 reports how long a reload takes that changes the
// allow list of 100 services on a hub (hub-ms), and one that replaces 100
// forwards on a site with 100 others (site-ms: 100 listeners closed, 100
// opened), with the site's tunnel up:
//
//	go test -run '^$' -bench Reload100 -benchtime 20x ./agent/
func BenchmarkReload100(b *testing.B) {
	dir := b.TempDir()
	p := newPKI(b, dir)
	target := answering(b, "x")
	services := func(allow string) string {
		var s strings.Builder
		for i := range 100 {
			s.WriteString(serviceTOML(fmt.Sprintf("svc%03d", i), target, allow))
		}
		s.WriteString("[log]\nlevel = \"error\"\n")
		return s.String()
	}
	names := func(prefix string) []string {
		var out []string
		for i := range 100 {
			out = append(out, fmt.Sprintf("%s%03d", prefix, i))
		}
		return out
	}
	hub := start(b, dir, "hub", hubTOML(p, services("*")))
	siteCfg := func(prefix string) string {
		return siteTOML(p, hub.ServerAddrs()[0].String(), names(prefix)...) + "[log]\nlevel = \"error\"\n"
	}
	site := start(b, dir, "site", siteCfg("svc"))
	waitTunnels(b, site, 1)
	var hubTook, siteTook time.Duration
	i := 0
	for b.Loop() {
		allow, prefix := "dns:site-a.test", "new"
		if i%2 == 1 {
			allow, prefix = "*", "svc"
		}
		i++
		rewrite(b, hub, hubTOML(p, services(allow)))
		began := time.Now()
		rep, err := hub.ReloadReport()
		hubTook += time.Since(began)
		if err != nil || strings.Count(rep, "changed allow") != 100 {
			b.Fatalf("hub reload: %v\n%s", err, rep)
		}
		rewrite(b, site, siteCfg(prefix))
		began = time.Now()
		rep, err = site.ReloadReport()
		siteTook += time.Since(began)
		if err != nil || strings.Count(rep, ": removed") != 100 || strings.Count(rep, ": added") != 100 {
			b.Fatalf("site reload: %v\n%s", err, rep)
		}
	}
	b.ReportMetric(float64(hubTook.Microseconds())/1000/float64(i), "hub-ms")
	b.ReportMetric(float64(siteTook.Microseconds())/1000/float64(i), "site-ms")
}
