package osservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	kservice "github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
)

// Run runs fn as the Windows service name. It registers with the Service
// Control Manager itself rather than through kardianos/service, which asks
// svc.IsWindowsService once at start and, where that says "interactive"
// (wine, containers), never talks to the SCM; the SCM then kills the process
// as hung. The command line says --service, so Run connects. Only if the SCM
// answers that this process was not started by it does Run fall back to a
// foreground run that stops on Ctrl-C.
func Run(name string, fn RunFunc, stderr io.Writer) error {
	h := &handler{fn: fn, log: handlerLog(name, eventLog(name, stderr))}
	err := svc.Run(name, h)
	if errors.Is(err, windows.ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
		fmt.Fprintf(stderr, "postern: --service %s: not started by the Service Control Manager; running in the foreground\n", name)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runNotified(ctx, fn, func(string) {}, 0)
	}
	if err != nil {
		return fmt.Errorf("service %s: %w", name, err)
	}
	return h.err
}

// logger is the part of kardianos/service's Logger the handler uses.
type logger interface {
	Info(v ...any) error
	Warning(v ...any) error
	Error(v ...any) error
}

// eventLog opens the Application Event Log under the service's source
// (registered by Install and by the MSI); failing that, it writes to stderr.
func eventLog(name string, stderr io.Writer) logger {
	if s, err := kservice.New(program{}, &kservice.Config{Name: name}); err == nil {
		if l, err := s.SystemLogger(nil); err == nil {
			return l
		}
	}
	return stderrLogger{stderr}
}

type stderrLogger struct{ w io.Writer }

func (l stderrLogger) Info(v ...any) error    { _, err := fmt.Fprintln(l.w, v...); return err }
func (l stderrLogger) Warning(v ...any) error { _, err := fmt.Fprintln(l.w, v...); return err }
func (l stderrLogger) Error(v ...any) error   { _, err := fmt.Fprintln(l.w, v...); return err }

// handlerLog is the handler's own log: slog text lines, with the service
// name as an attribute, written to l at each line's level.
func handlerLog(name string, l logger) *slog.Logger {
	return slog.New(slog.NewTextHandler(eventLogWriter(l), nil)).With("os_service", name)
}

// handler is the svc.Handler: it starts fn, reports Running once fn is
// ready, and on Stop or Shutdown cancels fn and waits for it to drain within
// the SCM's budget, reporting progress meanwhile.
type handler struct {
	fn  RunFunc
	log *slog.Logger
	err error // fn's error, read by Run after svc.Run returns

	mu    sync.Mutex
	drain Drain // how the agent drains, once it said so through ready
}

// exitFailure is the service-specific exit code when the agent fails. A
// non-zero code makes the SCM apply the recovery actions (restart).
const exitFailure = 1

const startHint = 30 * time.Second

func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	var checkpoint uint32
	pending := func(state svc.State, hint time.Duration) {
		checkpoint++
		status <- svc.Status{State: state, CheckPoint: checkpoint, WaitHint: uint32(hint / time.Millisecond)}
	}
	pending(svc.StartPending, startHint)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan struct{})
	readyOnce := sync.OnceFunc(func() { close(readyc) })
	ready := func(d Drain) {
		h.mu.Lock()
		h.drain = d
		h.mu.Unlock()
		readyOnce()
	}
	done := make(chan error, 1)
	go func() {
		// A panic would end the process with the SCM told nothing and its
		// stack on a stderr nobody reads: put it in the Event Log and stop
		// as a failure instead, so the recovery actions restart the agent.
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		done <- h.fn(ctx, ready)
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-readyc:
			readyc = nil
			status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
			h.log.Info("OS service running")
		case <-tick.C:
			if readyc != nil { // still starting: show the SCM it is not hung
				pending(svc.StartPending, startHint)
			}
		case err := <-done:
			return h.exit(err, "OS service ended by itself")
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				return h.stop(c.Cmd == svc.Shutdown, cancel, done, req, status, pending)
			}
		}
	}
}

// stop cancels fn and waits for it to drain, at most the stop budget: the
// agent's drain plus StopMargin, or at system shutdown what Windows grants.
// When the budget runs out first, it resets what is still open (the agent's
// own abort at the drain deadline) before it reports the service stopped.
func (h *handler) stop(shutdown bool, cancel func(), done <-chan error, req <-chan svc.ChangeRequest, status chan<- svc.Status, pending func(svc.State, time.Duration)) (bool, uint32) {
	h.mu.Lock()
	drain := h.drain
	h.mu.Unlock()
	budget := stopBudget(drain.Timeout, shutdown)
	h.log.Info("OS service stopping: draining connections", "wait", budget.String())
	pending(svc.StopPending, budget)
	cancel()
	deadline := time.NewTimer(budget)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return h.exit(err, "OS service stopped")
		case <-tick.C:
			pending(svc.StopPending, budget)
		case <-deadline.C:
			h.log.Warn("OS service stopping anyway: resetting the connections still open", "wait", budget.String())
			if drain.Abort != nil {
				drain.Abort()
			}
			return false, 0
		case c := <-req:
			if c.Cmd == svc.Interrogate {
				status <- c.CurrentStatus
			}
		}
	}
}

// exit reports how fn ended: msg says how when it ended without an error.
func (h *handler) exit(err error, msg string) (bool, uint32) {
	if err != nil && !errors.Is(err, context.Canceled) {
		h.err = err
		h.log.Error("OS service ended with an error", "err", err)
		return true, exitFailure
	}
	h.log.Info(msg)
	return false, 0
}

// stopBudget is how long a stop may drain: StopTimeout(drain), the SCM
// waiting as long as the checkpoints advance; at system shutdown no more
// than a little under WaitToKillServiceTimeout, the time Windows grants
// services before it ends them (20s unless configured).
func stopBudget(drain time.Duration, shutdown bool) time.Duration {
	budget := StopTimeout(drain)
	if !shutdown {
		return budget
	}
	return min(budget, shutdownBudget())
}

func shutdownBudget() time.Duration {
	timeout := 20 * time.Second
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SYSTEM\CurrentControlSet\Control`, registry.QUERY_VALUE)
	if err == nil {
		defer k.Close()
		if v, _, err := k.GetStringValue("WaitToKillServiceTimeout"); err == nil {
			if ms, err := strconv.Atoi(v); err == nil && ms > 0 {
				timeout = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return max(timeout-2*time.Second, 3*time.Second)
}
