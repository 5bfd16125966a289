package osservice

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	kservice "github.com/kardianos/service"
)

// unitDir is where Install writes units. Packages put theirs in the
// vendor directories below; Uninstall leaves those to the package manager.
const unitDir = "/etc/systemd/system"

var vendorUnitDirs = []string{"/lib/systemd/system", "/usr/lib/systemd/system"}

// systemdRunning reports whether systemd is the init system: the check
// sd_booted(3) documents. A variable so tests can pretend.
var systemdRunning = func() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// hiddenPrefixes are the trees the unit's ProtectHome= and PrivateTmp= hide
// from the agent: a binary, config or certificate there is not found.
var hiddenPrefixes = []string{"/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/"}

// Describe shows what Install would register: the systemd unit.
func Describe(c Config) (string, error) { return Unit(c) }

// Install writes NAME.service to /etc/systemd/system, enables it (it starts
// at boot) and reloads systemd. It does not start it. warnf is for what it
// could do only in part (nothing, on Linux).
func Install(c Config, warnf func(format string, args ...any)) error {
	unit, err := Unit(c)
	if err != nil {
		return err
	}
	if err := checkVisible(append([]string{c.Executable, c.ConfigPath}, c.Files...)...); err != nil {
		return fmt.Errorf("install service %q: %w", c.Name, err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("install service %q: %w: installing a systemd unit needs root: run it with sudo", c.Name, ErrPermission)
	}
	path := filepath.Join(unitDir, c.Name+".service")
	if existing := findUnit(c.Name); existing != "" {
		return existingUnitError(c.Name, existing)
	}
	if !systemdRunning() {
		return fmt.Errorf("install service %q: systemd is not running on this host (no /run/systemd/system): write the unit yourself from `postern service install --print`", c.Name)
	}
	if strings.Contains(unit, "{{") {
		// kardianos/service would read it as a template action.
		return fmt.Errorf("install service %q: a path contains \"{{\", which the unit writer cannot carry", c.Name)
	}
	u := c.User
	if u == "" {
		u = DefaultUser
	}
	if _, err := user.Lookup(u); err != nil {
		return fmt.Errorf("install service %q: user %q does not exist: create it (useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin %s) or pass --user", c.Name, u, u)
	}
	s, err := newService(c)
	if err != nil {
		return err
	}
	if err := s.Install(); err != nil {
		// kardianos/service creates the unit file before it renders it and
		// before `systemctl enable`; when either fails it leaves the file
		// behind (empty, or not enabled), and every later install then stops
		// at "already installed". Take it back out.
		cleanupFailedInstall(c.Name, path)
		var exit *exec.ExitError
		if errors.As(err, &exit) { // kardianos/service drops systemctl's own message
			return fmt.Errorf("install service %q: systemctl enable or daemon-reload: %v; the unit was removed again (run `systemctl daemon-reload` to see systemd's message)", c.Name, err)
		}
		return fmt.Errorf("install service %q: %v; the unit was removed again", c.Name, err)
	}
	return nil
}

func cleanupFailedInstall(name, path string) {
	_ = exec.Command("systemctl", "disable", name+".service").Run()
	_ = os.Remove(path)
}

// Uninstall stops the service, disables it and removes its unit.
func Uninstall(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("uninstall service %q: %w: removing a systemd unit needs root: run it with sudo", name, ErrPermission)
	}
	path := findUnit(name)
	switch {
	case path == "":
		return fmt.Errorf("uninstall service %q: %w (no %s.service in %s)", name, ErrNotInstalled, name, unitDir)
	case filepath.Dir(path) != unitDir:
		return packagedUnitError(name, path)
	}
	s, err := newService(Config{Name: name})
	if err != nil {
		return err
	}
	if systemdRunning() {
		_ = s.Stop() // not running is fine; disable and remove regardless
	}
	if err := s.Uninstall(); err != nil {
		return fmt.Errorf("uninstall service %q: %v", name, err)
	}
	return nil
}

// control runs a start, stop or restart through kardianos/service.
func control(name, action string, do func(kservice.Service) error) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if findUnit(name) == "" {
		return fmt.Errorf("%s service %q: %w (no %s.service)", action, name, ErrNotInstalled, name)
	}
	if !systemdRunning() {
		return fmt.Errorf("%s service %q: systemd is not running on this host", action, name)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s service %q: %w: run it with sudo", action, name, ErrPermission)
	}
	s, err := newService(Config{Name: name})
	if err != nil {
		return err
	}
	if err := do(s); err != nil {
		return fmt.Errorf("%s service %q: %v (see: journalctl -u %s)", action, name, err, name)
	}
	return nil
}

func Start(name string) error   { return control(name, "start", kservice.Service.Start) }
func Stop(name string) error    { return control(name, "stop", kservice.Service.Stop) }
func Restart(name string) error { return control(name, "restart", kservice.Service.Restart) }

// Status reports whether the unit is active.
func Status(name string) (State, error) {
	if err := CheckName(name); err != nil {
		return StateUnknown, err
	}
	if findUnit(name) == "" {
		return StateUnknown, fmt.Errorf("service %q: %w", name, ErrNotInstalled)
	}
	if !systemdRunning() {
		return StateUnknown, fmt.Errorf("service %q: systemd is not running on this host", name)
	}
	s, err := newService(Config{Name: name})
	if err != nil {
		return StateUnknown, err
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StateUnknown, fmt.Errorf("service %q: %w", name, ErrNotInstalled)
	case err != nil:
		return StateUnknown, fmt.Errorf("service %q: %v (see: systemctl status %s)", name, err, name)
	case st == kservice.StatusRunning:
		return StateRunning, nil
	case st == kservice.StatusStopped:
		return StateStopped, nil
	}
	return StateUnknown, nil
}

// findUnit returns the path of NAME.service in the unit directories, or "".
func findUnit(name string) string {
	for _, dir := range append([]string{unitDir}, vendorUnitDirs...) {
		p := filepath.Join(dir, name+".service")
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return ""
}

// checkVisible reports paths the unit's sandbox hides from the agent.
func checkVisible(paths ...string) error {
	for _, p := range paths {
		for _, prefix := range hiddenPrefixes {
			if strings.HasPrefix(p, prefix) {
				return fmt.Errorf("%s is under %s, which the service cannot see (ProtectHome=, PrivateTmp=): move it, e.g. to /usr/local/bin or /etc/postern", p, strings.TrimSuffix(prefix, "/"))
			}
		}
	}
	return nil
}

// newService builds the kardianos/service handle. It picks systemd itself:
// kardianos/service detects it only when systemd is PID 1 and would
// otherwise fall back to SysV init scripts.
func newService(c Config) (kservice.Service, error) {
	var sys kservice.System
	for _, s := range kservice.AvailableSystems() {
		if s.String() == "linux-systemd" {
			sys = s
		}
	}
	if sys == nil {
		return nil, errors.New("kardianos/service offers no systemd support")
	}
	kc := &kservice.Config{
		Name:        c.Name,
		DisplayName: displayName(c.Name),
		Description: description,
		Executable:  c.Executable,
		Arguments:   c.Arguments(),
	}
	if c.ConfigPath != "" {
		unit, err := Unit(c)
		if err != nil {
			return nil, err
		}
		kc.Option = kservice.KeyValue{"SystemdScript": unit}
	}
	return sys.New(program{}, kc)
}

// Configure is for Windows services; a systemd unit is changed with a
// drop-in (systemctl edit NAME).
func Configure(name string, delayedStart bool, warnf func(format string, args ...any)) error {
	return fmt.Errorf("configure service %q: only Windows services are configured this way; on Linux use: systemctl edit %s", name, name)
}
