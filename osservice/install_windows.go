package osservice

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	kservice "github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// recovery is what the SCM does when the service fails: restart it, sooner
// the first time than later, and forget past failures after a day. It also
// applies when the agent exits with an error (a non-crash failure).
var recovery = []mgr.RecoveryAction{
	{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 10 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 60 * time.Second},
}

const recoveryReset = 24 * 60 * 60 // seconds

// controlWait bounds how long Start and Stop wait for the service to settle.
const controlWait = 60 * time.Second

// Describe shows what Install would register with the SCM.
func Describe(c Config) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	start := "automatic"
	if c.DelayedStart {
		start = "automatic (delayed)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Service name:  %s\n", c.Name)
	fmt.Fprintf(&b, "Display name:  %s\n", displayName(c.Name))
	fmt.Fprintf(&b, "Command line:  %s\n", windows.ComposeCommandLine(append([]string{c.Executable}, c.Arguments()...)))
	fmt.Fprintf(&b, "Start:         %s, as LocalSystem\n", start)
	fmt.Fprintf(&b, "On failure:    restart after 5s, 10s, then 60s (also when the agent exits with an error); reset after 1 day\n")
	fmt.Fprintf(&b, "Event Log:     Application, source %q\n", c.Name)
	return b.String(), nil
}

// Install registers the service with the SCM (automatic start, recovery
// actions) and its Event Log source. It does not start it. What it could
// set only in part goes to warnf.
func Install(c Config, warnf func(format string, args ...any)) error {
	if err := c.check(); err != nil {
		return err
	}
	m, err := connect("install", c.Name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(c.Name); err == nil {
		s.Close()
		return fmt.Errorf("install service %q: %w: remove it first with `postern service uninstall%s` (or, when the MSI installed it, uninstall Postern in Settings > Apps), or choose another --name", c.Name, ErrExists, nameFlag(c.Name))
	}
	ks, err := newService(c)
	if err != nil {
		return err
	}
	hadSource := eventSourceExists(c.Name)
	// The Event Log source goes under the Application log's key, which
	// eventlog.Install opens but does not create. Windows always has it;
	// a wine prefix may not, once an uninstall removed its last source.
	if k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, eventLogKey, registry.CREATE_SUB_KEY); err == nil {
		k.Close()
	}
	err = ks.Install()
	if err == nil {
		err = setRecovery(m, c.Name, warnf)
	}
	if err != nil {
		// kardianos/service leaves the service registered when a step after
		// CreateService fails; a half-configured service would restart
		// nothing and block the next install. Take it back out, and the
		// Event Log source if this install added it.
		if s, oerr := m.OpenService(c.Name); oerr == nil {
			s.Delete()
			s.Close()
		}
		if !hadSource {
			eventlog.Remove(c.Name)
		}
		return fmt.Errorf("install service %q: %v", c.Name, err)
	}
	return nil
}

const eventLogKey = `SYSTEM\CurrentControlSet\Services\EventLog\Application`

func eventSourceExists(name string) bool {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, eventLogKey+`\`+name, registry.QUERY_VALUE)
	if err != nil {
		return false
	}
	k.Close()
	return true
}

// setRecovery sets restart-on-failure for crashes and for error exits; the
// latter kardianos/service does not offer. Windows has both since Vista; a
// system without the second (wine says ERROR_INVALID_LEVEL) gets a warning.
func setRecovery(m *mgr.Mgr, name string, warnf func(string, ...any)) error {
	s, err := m.OpenService(name)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SetRecoveryActions(recovery, recoveryReset); err != nil {
		return fmt.Errorf("set recovery actions: %w", err)
	}
	err = s.SetRecoveryActionsOnNonCrashFailures(true)
	if errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		warnf("this system cannot restart the service when the agent exits with an error (only when it crashes): %v", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("set recovery on non-crash failures: %w", err)
	}
	return nil
}

// Uninstall stops the service, removes it and its Event Log source.
func Uninstall(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	m, err := connect("uninstall", name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return notInstalled("uninstall", name, err)
	}
	err = stopWait(s)
	if err != nil {
		s.Close()
		return fmt.Errorf("uninstall service %q: %w", name, err)
	}
	if !eventSourceExists(name) {
		// kardianos/service would delete the service and then fail on the
		// missing Event Log source; there is nothing else to remove.
		err = s.Delete()
		s.Close()
		if err != nil {
			return fmt.Errorf("uninstall service %q: %w", name, err)
		}
		return nil
	}
	s.Close()
	ks, err := newService(Config{Name: name})
	if err != nil {
		return err
	}
	if err := ks.Uninstall(); err != nil {
		return fmt.Errorf("uninstall service %q: %v", name, err)
	}
	return nil
}

// Start starts the service and waits until it runs, or reports that it
// stopped again (the agent's reason is in the Event Log).
func Start(name string) error {
	s, done, err := open("start", name)
	if err != nil {
		return err
	}
	defer done()
	ks, err := newService(Config{Name: name})
	if err != nil {
		return err
	}
	if err := ks.Start(); err != nil && !errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
		return fmt.Errorf("start service %q: %w", name, err)
	}
	st, err := waitState(s, svc.Running, svc.Stopped)
	if err != nil {
		return fmt.Errorf("start service %q: %w", name, err)
	}
	if st.State != svc.Running {
		return fmt.Errorf("start service %q: it stopped again (exit code %d): see the Event Log, Application, source %q", name, st.ServiceSpecificExitCode, name)
	}
	return nil
}

// Stop asks the service to stop and waits, with a deadline, until it has.
func Stop(name string) error {
	s, done, err := open("stop", name)
	if err != nil {
		return err
	}
	defer done()
	if err := stopWait(s); err != nil {
		return fmt.Errorf("stop service %q: %w", name, err)
	}
	return nil
}

// Restart stops the service (if it runs) and starts it again.
func Restart(name string) error {
	if err := Stop(name); err != nil {
		return err
	}
	return Start(name)
}

// Status reports whether the service runs.
func Status(name string) (State, error) {
	if err := CheckName(name); err != nil {
		return StateUnknown, err
	}
	ks, err := newService(Config{Name: name})
	if err != nil {
		return StateUnknown, err
	}
	st, err := ks.Status()
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StateUnknown, fmt.Errorf("service %q: %w", name, ErrNotInstalled)
	case err != nil:
		return StateUnknown, fmt.Errorf("service %q: %w", name, err)
	case st == kservice.StatusRunning:
		return StateRunning, nil
	case st == kservice.StatusStopped:
		return StateStopped, nil
	}
	return StateUnknown, nil
}

// connect opens the SCM with the rights to change services.
func connect(action, name string) (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return nil, fmt.Errorf("%s service %q: %w: changing services needs an elevated prompt: run it as Administrator", action, name, ErrPermission)
	}
	if err != nil {
		return nil, fmt.Errorf("%s service %q: connect to the Service Control Manager: %w", action, name, err)
	}
	return m, nil
}

// open opens the service with the rights to start, stop and query it.
func open(action, name string) (*mgr.Service, func(), error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	h, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return nil, nil, fmt.Errorf("%s service %q: connect to the Service Control Manager: %w", action, name, err)
	}
	m := &mgr.Mgr{Handle: h}
	sh, err := windows.OpenService(h, windows.StringToUTF16Ptr(name),
		windows.SERVICE_QUERY_STATUS|windows.SERVICE_START|windows.SERVICE_STOP)
	if err != nil {
		m.Disconnect()
		return nil, nil, notInstalled(action, name, err)
	}
	s := &mgr.Service{Name: name, Handle: sh}
	return s, func() { s.Close(); m.Disconnect() }, nil
}

func notInstalled(action, name string, err error) error {
	switch {
	case errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST):
		return fmt.Errorf("%s service %q: %w", action, name, ErrNotInstalled)
	case errors.Is(err, windows.ERROR_ACCESS_DENIED):
		return fmt.Errorf("%s service %q: %w: run it as Administrator", action, name, ErrPermission)
	}
	return fmt.Errorf("%s service %q: %w", action, name, err)
}

// stopWait stops s unless it is stopped and waits until it is. It replaces
// kardianos/service's Stop, whose wait has no working deadline.
func stopWait(s *mgr.Service) error {
	st, err := s.Query()
	if err != nil {
		return err
	}
	if st.State == svc.Stopped {
		return nil
	}
	if st.State != svc.StopPending {
		if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
			return err
		}
	}
	_, err = waitState(s, svc.Stopped)
	return err
}

// waitState polls s until it is in one of states or controlWait has passed.
func waitState(s *mgr.Service, states ...svc.State) (svc.Status, error) {
	deadline := time.Now().Add(controlWait)
	for {
		st, err := s.Query()
		if err != nil {
			return st, err
		}
		for _, want := range states {
			if st.State == want {
				return st, nil
			}
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("still %s after %s", stateName(st.State), controlWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "starting"
	case svc.StopPending:
		return "stopping"
	case svc.Running:
		return "running"
	}
	return fmt.Sprintf("in state %d", s)
}

func newService(c Config) (kservice.Service, error) {
	start := kservice.ServiceStartAutomatic
	return kservice.New(program{}, &kservice.Config{
		Name:        c.Name,
		DisplayName: displayName(c.Name),
		Description: description,
		Executable:  c.Executable,
		Arguments:   c.Arguments(),
		Option: kservice.KeyValue{
			kservice.StartType:              start,
			"DelayedAutoStart":              c.DelayedStart,
			kservice.OnFailure:              kservice.OnFailureRestart,
			kservice.OnFailureDelayDuration: "5s",
			kservice.OnFailureResetPeriod:   recoveryReset,
		},
	})
}

// Configure sets the recovery actions, and with delayedStart a delayed
// automatic start, on an installed service: what Install sets after creating
// it. The MSI runs it (`postern service configure`) once it has registered
// the service, since MSI tables can express neither.
func Configure(name string, delayedStart bool, warnf func(format string, args ...any)) error {
	if err := CheckName(name); err != nil {
		return err
	}
	m, err := connect("configure", name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return notInstalled("configure", name, err)
	}
	defer s.Close()
	if delayedStart {
		info := windows.SERVICE_DELAYED_AUTO_START_INFO{IsDelayedAutoStartUp: 1}
		if err := windows.ChangeServiceConfig2(s.Handle, windows.SERVICE_CONFIG_DELAYED_AUTO_START_INFO, (*byte)(unsafe.Pointer(&info))); err != nil {
			return fmt.Errorf("configure service %q: delayed start: %w", name, err)
		}
	}
	if err := setRecovery(m, name, warnf); err != nil {
		return fmt.Errorf("configure service %q: %w", name, err)
	}
	return nil
}
