package osservice

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Run runs fn as the systemd service name: it stops on SIGINT or SIGTERM,
// and tells systemd (when NOTIFY_SOCKET is set, as with Type=notify) READY=1
// once fn calls ready, WATCHDOG=1 every half WatchdogSec, and STOPPING=1 when
// it begins to drain. Outside systemd it is a plain foreground run.
//
// SIGHUP does not end the process: Run catches it for as long as it runs, so
// one that arrives before the agent subscribes to it (for a certificate
// reload) is dropped rather than fatal. Every subscriber gets its own copy.
// A second SIGINT or SIGTERM while draining ends the process at once.
func Run(name string, fn RunFunc, stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // never read: delivery is dropped when full
	defer signal.Stop(hup)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore the default action: a second signal ends the process
	}()

	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		fmt.Fprintf(stderr, "postern: service %s: watchdog: %v\n", name, err)
	}
	return runNotified(ctx, fn, sdNotify(name, stderr), interval/2)
}

// sdNotify sends one state to systemd; without NOTIFY_SOCKET it does nothing.
func sdNotify(name string, stderr io.Writer) func(string) {
	return func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			fmt.Fprintf(stderr, "postern: service %s: sd_notify %s: %v\n", name, state, err)
		}
	}
}
