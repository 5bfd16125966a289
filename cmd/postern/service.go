package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/osservice"
)

// serviceFlags are the flags of `postern service ACTION`.
type serviceFlags struct {
	config       string
	name         string
	print        bool
	user         string
	watchdog     time.Duration
	delayedStart bool
}

const serviceUsage = `usage: postern service ACTION [-c FILE] [--name NAME] [flags]

actions:
  install     register the service (runs "postern run -c FILE --service NAME"); does not start it
  uninstall   stop and remove the service
  start, stop, restart
  status      print running|stopped; exit 0 running, 3 stopped, 4 not installed
  configure   Windows: set recovery actions and the start type (--delayed-start)
              of an installed service; the MSI runs it

flags:
`

// cmdService is `postern service ACTION`.
func cmdService(args []string, stdout, stderr io.Writer) int {
	var f serviceFlags
	fs := flag.NewFlagSet("postern service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "c", "", "config `FILE` (install: required)")
	fs.StringVar(&f.name, "name", osservice.DefaultName, "service `NAME`, one per instance on a host")
	fs.BoolVar(&f.print, "print", false, "install: show what would be installed (the systemd unit) and change nothing")
	fs.StringVar(&f.user, "user", osservice.DefaultUser, "install, Linux: `ACCOUNT` the agent runs as")
	fs.DurationVar(&f.watchdog, "watchdog", osservice.DefaultWatchdog, "install, Linux: systemd watchdog period, 0 to turn it off")
	fs.BoolVar(&f.delayedStart, "delayed-start", false, "install, configure, Windows: start automatically once boot has settled")
	fs.Usage = func() { fmt.Fprint(stderr, serviceUsage); fs.PrintDefaults() }

	// Flags may come before or after the action.
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	action := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "postern service %s: unexpected argument %q\n", action, fs.Arg(0))
		return 2
	}
	if err := osservice.CheckName(f.name); err != nil {
		fmt.Fprintf(stderr, "postern service %s: %v\n", action, err)
		return 2
	}

	warnf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "postern service %s: warning: "+format+"\n", append([]any{action}, args...)...)
	}
	switch action {
	case "install":
		return serviceInstall(f, warnf, stdout, stderr)
	case "status":
		return serviceStatus(f.name, stdout, stderr)
	case "configure":
		if err := osservice.Configure(f.name, f.delayedStart, warnf); err != nil {
			fmt.Fprintf(stderr, "postern service configure: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "service %q configured\n", f.name)
		return 0
	}
	controls := map[string]struct {
		do   func(string) error
		done string
	}{
		"uninstall": {osservice.Uninstall, "uninstalled"},
		"start":     {osservice.Start, "started"},
		"stop":      {osservice.Stop, "stopped"},
		"restart":   {osservice.Restart, "restarted"},
	}
	c, ok := controls[action]
	if !ok {
		fmt.Fprintf(stderr, "postern service: unknown action %q\n\n", action)
		fs.Usage()
		return 2
	}
	if err := c.do(f.name); err != nil {
		fmt.Fprintf(stderr, "postern service %s: %v\n", action, err)
		return 1
	}
	fmt.Fprintf(stdout, "service %q %s\n", f.name, c.done)
	return 0
}

func serviceInstall(f serviceFlags, warnf func(string, ...any), stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "postern service install: %v\n", err)
		return 1
	}
	if f.config == "" {
		fmt.Fprintln(stderr, "postern service install: -c FILE is required: the config the service runs with")
		return 2
	}
	c, err := serviceConfig(f)
	if err != nil {
		return fail(err)
	}
	if f.print {
		text, err := osservice.Describe(c)
		if err != nil {
			return fail(err)
		}
		fmt.Fprint(stdout, text)
		for _, w := range osservice.DescribeWarnings(c) {
			warnf("%s", w)
		}
		return 0
	}
	if err := osservice.Install(c, warnf); err != nil {
		return fail(err)
	}
	start := "postern service start"
	if f.name != osservice.DefaultName {
		start += " --name " + f.name
	}
	fmt.Fprintf(stdout, "service %q installed, runs: postern run -c %s --service %s\nstart it with: %s\n", c.Name, c.ConfigPath, c.Name, start)
	return 0
}

// serviceConfig builds the service description from the flags and the agent
// config, which must load: a service that cannot start helps nobody.
func serviceConfig(f serviceFlags) (osservice.Config, error) {
	path, err := filepath.Abs(f.config)
	if err != nil {
		return osservice.Config{}, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return osservice.Config{}, fmt.Errorf("%w\nfix the config first (postern check -c %s)", err, path)
	}
	exe, err := os.Executable()
	if err != nil {
		return osservice.Config{}, fmt.Errorf("locate the postern binary: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return osservice.Config{
		Name:            f.name,
		ConfigPath:      path,
		Executable:      exe,
		User:            f.user,
		LowPorts:        listensBelow1024(cfg),
		Watchdog:        f.watchdog,
		ShutdownTimeout: cfg.ShutdownTimeout.D(),
		Files:           tlsFiles(cfg),
		DelayedStart:    f.delayedStart,
	}, nil
}

// listensBelow1024 reports whether the agent binds a privileged port, which
// on Linux needs CAP_NET_BIND_SERVICE.
func listensBelow1024(cfg *config.Config) bool {
	addrs := []config.Address{cfg.Admin.Listen}
	for _, s := range cfg.Servers {
		addrs = append(addrs, s.Listen)
	}
	for _, fw := range cfg.Forwards {
		addrs = append(addrs, fw.Listen)
	}
	for _, a := range addrs {
		_, port, err := net.SplitHostPort(string(a))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 1024 {
			return true
		}
	}
	return false
}

// tlsFiles lists the certificate files the agent reads.
func tlsFiles(cfg *config.Config) []string {
	var files []string
	seen := map[string]bool{}
	add := func(t config.TLS) {
		for _, p := range tokenFiles(append([]string{t.Cert, t.Key, t.CA}, t.CRL...)) {
			if p != "" && !seen[p] {
				seen[p] = true
				files = append(files, p)
			}
		}
	}
	add(cfg.TLS)
	for _, s := range cfg.Servers {
		add(s.TLS)
	}
	for _, c := range cfg.Clients {
		add(c.TLS)
	}
	return files
}

func serviceStatus(name string, stdout, stderr io.Writer) int {
	st, err := osservice.Status(name)
	switch {
	case errors.Is(err, osservice.ErrNotInstalled):
		fmt.Fprintf(stdout, "service %q: not installed\n", name)
		return 4
	case err != nil:
		fmt.Fprintf(stderr, "postern service status: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "service %q: %s\n", name, st)
	if st != osservice.StateRunning {
		return 3
	}
	return 0
}

// serviceRun runs fn under the OS service manager: `postern run --service
// NAME`, the command line every installed service has. fn runs the agent
// until ctx is cancelled, then drains and returns; it calls ready once the
// agent serves.
func serviceRun(name string, fn osservice.RunFunc, stderr io.Writer) int {
	if err := osservice.Run(name, fn, stderr); err != nil {
		fmt.Fprintf(stderr, "postern: %v\n", err)
		return 1
	}
	return 0
}
