package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/postern-tunnel/postern/agent"
)

// reloadOnHangup makes SIGHUP (systemctl reload) reload a's config file
// (services and forwards, see agent/reconfig.go) and its certificates,
// keys, CA bundles and CRLs until stop is called. Reload logs what changed
// and what failed. On Windows no SIGHUP arrives; the agent's polling of the
// files (reload_interval) does the same there.
func reloadOnHangup(a *agent.Agent) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				a.Reload()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
