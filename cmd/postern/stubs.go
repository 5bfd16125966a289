package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Commands not built yet. Each moves to its own file when it is.

func cmdCheck(args []string, stdout, stderr io.Writer) int   { return notYet("check", stderr) }
func cmdService(args []string, stdout, stderr io.Writer) int { return notYet("service", stderr) }
func cmdPKI(args []string, stdout, stderr io.Writer) int     { return notYet("pki", stderr) }
func cmdDemo(args []string, stdout, stderr io.Writer) int    { return notYet("demo", stderr) }
func cmdRun(args []string, stdout, stderr io.Writer) int     { return notYet("run", stderr) }

func notYet(name string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "postern %s: not available in this build\n", name)
	return 2
}

// serviceRun runs fn under the OS service manager (`postern run --service`).
// This stand-in runs it until SIGINT/SIGTERM; the service package replaces it.
func serviceRun(name string, fn func(ctx context.Context, ready func()) error, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fn(ctx, func() {}); err != nil {
		fmt.Fprintf(stderr, "postern: %v\n", err)
		return 1
	}
	return 0
}
