package main

import (
	"log/slog"
	"os"
	"runtime"
)

// procsFor decides how many threads run the agent's Go code at once
// (GOMAXPROCS), from the config's procs and the GOMAXPROCS environment
// variable, with cpus the CPUs the process may use. An agent relays
// between sockets whose other ends (the application, the target, the
// peer agent) usually run on the same machine: half the CPUs keeps the
// Go scheduler from waking idle cores for work one thread does sooner
// (docs/performance.md, "One thread for Go code on two cores").
func procsFor(procs int, env string, cpus int) (n int, from string) {
	switch {
	case env != "":
		return cpus, "GOMAXPROCS" // the runtime applied it already
	case procs > 0:
		return procs, "procs"
	default:
		return max(1, cpus/2), "half the CPUs"
	}
}

// setProcs applies procsFor and logs the choice.
func setProcs(procs int, log *slog.Logger) {
	cpus := runtime.GOMAXPROCS(0)
	n, from := procsFor(procs, os.Getenv("GOMAXPROCS"), cpus)
	if from != "GOMAXPROCS" {
		runtime.GOMAXPROCS(n)
	}
	log.Info("threads for Go code", "procs", n, "from", from, "cpus", runtime.NumCPU())
}
