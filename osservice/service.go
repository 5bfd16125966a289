// Package osservice installs, controls and runs Postern as an operating-system
// service: a systemd unit on Linux, a Service Control Manager (SCM) service on
// Windows.
//
// Install, Uninstall, Start and Status go through github.com/kardianos/service,
// with the gaps of its v1.3.0 filled in here: on Linux the unit is Postern's
// own hardened Type=notify unit (see Unit) and a failed install is cleaned up;
// on Windows recovery actions cover non-crash failures and Stop waits with a
// deadline.
//
// Run is the other half: what `postern run -c FILE --service NAME` does. The
// installed command line carries --service, so the agent is in service mode
// because it was told so, never because of a guess about the environment
// (kardianos/service guesses "interactive" under wine and in containers).
// On Linux Run speaks sd_notify; on Windows it registers with the SCM itself.
package osservice

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	kservice "github.com/kardianos/service"
)

// DefaultName is the service name when none is given.
const DefaultName = "postern"

// DefaultUser is the Linux account the agent runs as; the packages create it.
const DefaultUser = "postern"

// DefaultWatchdog is the systemd watchdog period written into the unit.
const DefaultWatchdog = 30 * time.Second

// Config describes one installed instance. Several instances live side by
// side on one host under different names, each with its own config file.
type Config struct {
	Name       string // service name: NAME.service on Linux, NAME in the SCM
	ConfigPath string // absolute path of the agent's TOML file
	Executable string // absolute path of the postern binary

	// ShutdownTimeout is the agent's shutdown_timeout (0: DefaultDrain);
	// the unit's TimeoutStopSec follows it (StopTimeout).
	ShutdownTimeout time.Duration

	// Linux only.
	User     string        // account the agent runs as ("" means DefaultUser)
	LowPorts bool          // keep CAP_NET_BIND_SERVICE to listen below port 1024
	Watchdog time.Duration // WatchdogSec; 0 leaves the watchdog off
	Files    []string      // other files the agent reads (certificates): checked against the sandbox

	// Windows only.
	DelayedStart bool // automatic start, delayed until after boot
}

// Arguments is the command line the service manager runs, after the binary.
func (c Config) Arguments() []string {
	return []string{"run", "-c", c.ConfigPath, "--service", c.Name}
}

// RunFunc runs the agent until ctx is cancelled, then drains and returns.
// It calls ready once the agent serves, saying how the agent drains.
type RunFunc func(ctx context.Context, ready func(Drain)) error

// Drain is how a running agent stops: after a stop request it drains for
// up to Timeout (shutdown_timeout), then resets every connection still
// open. The service manager's stop budget follows it (StopTimeout).
type Drain struct {
	Timeout time.Duration
	// Abort resets every connection still open at once; nil when unknown.
	// Run calls it when the service manager's budget runs out first.
	Abort func()
}

// StopMargin is how much longer than the agent's drain a service manager
// waits, after asking it to stop, before it ends the process: the resets at
// the drain deadline and the exit need a moment, and a busy host more.
const StopMargin = 15 * time.Second

// DefaultDrain is shutdown_timeout's default, assumed when the agent's
// drain is not known (yet).
const DefaultDrain = 30 * time.Second

// StopTimeout is the service manager's stop budget for an agent that
// drains for drain (0: DefaultDrain).
func StopTimeout(drain time.Duration) time.Duration {
	if drain <= 0 {
		drain = DefaultDrain
	}
	return drain + StopMargin
}

// Errors callers branch on to choose a message and an exit status.
var (
	ErrExists       = errors.New("already installed")
	ErrNotInstalled = errors.New("not installed")
	ErrPermission   = errors.New("permission denied")
)

// State is what Status reports.
type State int

const (
	StateUnknown State = iota
	StateRunning
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName reports whether name can name a service on every platform:
// letters, digits, '.', '_' and '-', starting with a letter or digit.
func CheckName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("service name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// check validates c before it is installed or described.
func (c Config) check() error {
	if err := CheckName(c.Name); err != nil {
		return err
	}
	if !filepath.IsAbs(c.ConfigPath) {
		return fmt.Errorf("service %q: config path %q is not absolute", c.Name, c.ConfigPath)
	}
	if !filepath.IsAbs(c.Executable) {
		return fmt.Errorf("service %q: executable %q is not absolute", c.Name, c.Executable)
	}
	return nil
}

// program is the kardianos/service Interface. Install and control never call
// it: Run does not go through kardianos/service (see the package comment).
type program struct{}

func (program) Start(kservice.Service) error { return nil }
func (program) Stop(kservice.Service) error  { return nil }

// displayName is what service listings show.
func displayName(name string) string {
	if name == DefaultName {
		return "Postern tunnel"
	}
	return "Postern tunnel (" + name + ")"
}

const description = "Postern: carries plaintext TCP over a mutually authenticated TLS tunnel."
