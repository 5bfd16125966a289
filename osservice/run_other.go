//go:build !linux && !windows

package osservice

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Run runs fn until SIGINT or SIGTERM. Postern installs services only on
// Linux and Windows; elsewhere `--service` is a plain foreground run.
func Run(name string, fn RunFunc, stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // not fatal; see the Linux Run
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runNotified(ctx, fn, func(string) {}, 0)
}
