package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/osservice"
)

type runFlags struct {
	config  string
	service string // run under the OS service manager with this service name
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var f runFlags
	fs := flag.NewFlagSet("postern run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "c", "", "config `FILE` (TOML)")
	fs.StringVar(&f.service, "service", "", "run as the OS service `NAME` (used by the installed service)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if f.config == "" {
		fmt.Fprintln(stderr, "postern run: -c FILE is required")
		return 2
	}
	if f.service != "" {
		return serviceRun(f.service, func(ctx context.Context, ready func(osservice.Drain)) error {
			// Under the Windows SCM there is no stderr: the log goes to the
			// Event Log.
			return runAgent(ctx, f.config, osservice.LogWriter(f.service, stderr), func(a *agent.Agent) {
				ready(osservice.Drain{Timeout: a.ShutdownTimeout(), Abort: a.Abort})
			})
		}, stderr)
	}
	ctx, stop, onSecond := signalContext(stderr)
	defer stop()
	if err := runAgent(ctx, f.config, stderr, func(a *agent.Agent) { onSecond.Store(a) }); err != nil {
		fmt.Fprintf(stderr, "postern: %v\n", err)
		return 1
	}
	return 0
}

// signalContext ends on the first SIGINT or SIGTERM (the agent then
// drains); a second one resets every stream of the agent stored in the
// returned pointer and exits at once.
func signalContext(stderr io.Writer) (context.Context, func(), *atomic.Pointer[agent.Agent]) {
	ctx, cancel := context.WithCancel(context.Background())
	var running atomic.Pointer[agent.Agent]
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(stderr, "postern: second signal: exiting now without draining; open connections are reset")
		if a := running.Load(); a != nil {
			a.Abort()
		}
		os.Exit(1)
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}, &running
}

// runAgent loads the config, starts the agent, calls ready once it serves,
// and runs until ctx is done; then it drains and returns.
func runAgent(ctx context.Context, path string, stderr io.Writer, ready func(*agent.Agent)) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	setProcs(cfg.Procs, log)
	if err := enrollOnStart(ctx, cfg, log); err != nil {
		return err
	}
	a, err := agent.New(cfg, log, agent.Options{})
	if err != nil {
		return withSwapLines(cfg, err)
	}
	defer reloadOnHangup(a)() // SIGHUP: reload certificates, keys, CAs and CRLs
	ready(a)
	return a.Run(ctx)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
