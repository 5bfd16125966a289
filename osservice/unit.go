package osservice

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Unit renders the systemd unit for c. It is plain text with nothing left for
// a template engine: Install hands it to kardianos/service as its
// SystemdScript, whose own engine passes text without "{{" through unchanged.
//
// The unit runs the agent as its own user under a read-only view of the
// system, with only the network families and system calls a TCP proxy needs.
// `systemd-analyze security` rates it OK or better (tests/service_unit_test.go).
func Unit(c Config) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	return renderUnit(c, false), nil
}

// TemplateUnit renders postern@.service: one instance per config file,
// /etc/postern/INSTANCE.toml, started as `systemctl enable --now
// postern@INSTANCE`. The packages ship it next to postern.service.
func TemplateUnit(executable string) string {
	c := Config{
		Name:       "postern@%i",
		ConfigPath: "/etc/postern/%i.toml",
		Executable: executable,
		Watchdog:   DefaultWatchdog,
	}
	return renderUnit(c, true)
}

func renderUnit(c Config, template bool) string {
	user := c.User
	if user == "" {
		user = DefaultUser
	}
	// A template keeps its %i specifiers; anything else is escaped so a
	// path with '%' or '$' reaches the agent as written.
	arg := systemdArg
	if template {
		arg = func(s string) string { return s }
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	line("[Unit]")
	if template {
		line("Description=Postern tunnel (%%i)")
	} else {
		line("Description=%s", displayName(c.Name))
	}
	line("Documentation=https://github.com/postern-tunnel/postern/blob/main/docs/install.md")
	line("After=network-online.target")
	line("Wants=network-online.target")
	line("StartLimitIntervalSec=60")
	line("StartLimitBurst=5")
	line("")
	line("[Service]")
	line("Type=notify")
	line("NotifyAccess=main")
	args := []string{arg(c.Executable)}
	for _, a := range c.Arguments() {
		args = append(args, arg(a))
	}
	line("ExecStart=%s", strings.Join(args, " "))
	line("# SIGHUP reloads certificates, CA bundles and CRLs without dropping tunnels.")
	line("ExecReload=/bin/kill -HUP $MAINPID")
	line("Restart=on-failure")
	line("RestartSec=2s")
	if template {
		line("# The agent drains for shutdown_timeout (30s by default) after SIGTERM, then")
		line("# resets what is left. For an instance with a longer shutdown_timeout the")
		line("# agent extends this timeout itself (EXTEND_TIMEOUT_USEC) when it stops.")
	} else {
		line("# The agent drains for shutdown_timeout (%s) after SIGTERM, then resets what", unitDuration(drainOf(c)))
		line("# is left; this is shutdown_timeout plus %s.", unitDuration(StopMargin))
	}
	line("TimeoutStopSec=%s", unitDuration(StopTimeout(c.ShutdownTimeout)))
	if c.Watchdog > 0 {
		line("WatchdogSec=%s", unitDuration(c.Watchdog))
	}
	line("User=%s", user)
	line("Group=%s", user)
	line("UMask=0077")
	line("# /run/postern holds the control socket (postern status, postern reload):")
	line("# NAME.control.sock for the config file NAME.toml, mode 0660 (root and the agent's")
	line("# group). Kept while other instances run.")
	line("RuntimeDirectory=postern")
	line("RuntimeDirectoryMode=0750")
	line("RuntimeDirectoryPreserve=yes")
	line("")
	line("# Hardening: the agent reads its config and certificates, listens and")
	line("# dials TCP, and logs to the journal. It needs nothing else.")
	if c.LowPorts {
		line("# This instance listens below port 1024.")
		line("CapabilityBoundingSet=CAP_NET_BIND_SERVICE")
		line("AmbientCapabilities=CAP_NET_BIND_SERVICE")
	} else {
		line("# To listen below port 1024, reinstall (the installer sees the port) or add")
		line("# CapabilityBoundingSet= and AmbientCapabilities=CAP_NET_BIND_SERVICE and")
		line("# PrivateUsers=no in a drop-in (systemctl edit).")
		line("CapabilityBoundingSet=")
		line("AmbientCapabilities=")
		line("PrivateUsers=yes")
	}
	for _, l := range hardening {
		line("%s", l)
	}
	line("")
	line("[Install]")
	line("WantedBy=multi-user.target")
	return b.String()
}

var hardening = []string{
	"NoNewPrivileges=yes",
	"ProtectSystem=strict",
	"ProtectHome=yes",
	"PrivateTmp=yes",
	"PrivateDevices=yes",
	"PrivateMounts=yes",
	"DevicePolicy=closed",
	"ProtectKernelTunables=yes",
	"ProtectKernelModules=yes",
	"ProtectKernelLogs=yes",
	"ProtectControlGroups=yes",
	"ProtectClock=yes",
	"ProtectHostname=yes",
	"ProtectProc=invisible",
	"ProcSubset=pid",
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
	"RestrictNamespaces=yes",
	"RestrictRealtime=yes",
	"RestrictSUIDSGID=yes",
	"LockPersonality=yes",
	"MemoryDenyWriteExecute=yes",
	"RemoveIPC=yes",
	"KeyringMode=private",
	"SystemCallArchitectures=native",
	"SystemCallFilter=@system-service",
	"SystemCallFilter=~@privileged @resources",
	"SystemCallErrorNumber=EPERM",
}

func drainOf(c Config) time.Duration {
	if c.ShutdownTimeout <= 0 {
		return DefaultDrain
	}
	return c.ShutdownTimeout
}

// unitDuration writes d in a form systemd parses ("30s", "1min 30s" is not
// needed: whole seconds or milliseconds suffice).
func unitDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

var plainArg = regexp.MustCompile(`^[A-Za-z0-9/._:+=,@-]+$`)

// systemdArg quotes one ExecStart word: double quotes when it holds anything
// but plain characters, and '%' and '$' doubled so systemd expands neither a
// specifier nor a variable.
func systemdArg(s string) string {
	if !plainArg.MatchString(s) {
		s = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
}
