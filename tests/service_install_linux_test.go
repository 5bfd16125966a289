package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// svcSandbox runs `postern service ...` as if on a systemd host, without
// touching this one: a private mount namespace puts a temporary folder over
// /etc/systemd/system, a tmpfs over /run (with /run/systemd/system, the
// "systemd is running" mark, when systemd is true), the binary and its
// config in a tmpfs over /opt (outside the trees the unit hides), a passwd
// with a postern account over /etc/passwd, and a fake systemctl that logs
// its arguments first on PATH.
type svcSandbox struct {
	t       *testing.T
	bin     string // postern, built for the host
	units   string // shows as /etc/systemd/system
	state   string // systemctl.log, switches for the fake systemctl
	conf    string // copied to /opt/postern
	fakebin string
}

const svcFakeSystemctl = `#!/bin/sh
echo "$*" >> "$STATE/systemctl.log"
case "$1" in
enable)
	if [ -f "$STATE/fail-enable" ]; then echo "Failed to enable unit: simulated" >&2; exit 1; fi ;;
is-active)
	if [ -f "$STATE/active" ]; then echo active; exit 0; fi
	echo inactive; exit 3 ;;
list-unit-files)
	echo "$4 enabled enabled" ;;
esac
exit 0
`

const svcSandboxScript = `set -e
mount --bind "$UNITS" /etc/systemd/system
mount -t tmpfs tmpfs /run
if [ "$SYSTEMD" = yes ]; then mkdir -p /run/systemd/system; fi
mount -t tmpfs tmpfs /opt
mkdir -p /opt/postern
cp "$BIN" /opt/postern/postern
cp -r "$CONF"/. /opt/postern/
cp /etc/passwd "$STATE/passwd"
grep -q '^postern:' "$STATE/passwd" || echo 'postern:x:64999:64999:Postern:/nonexistent:/usr/sbin/nologin' >> "$STATE/passwd"
mount --bind "$STATE/passwd" /etc/passwd
export PATH="$FAKEBIN:$PATH"
if [ -n "$AS_USER" ]; then exec setpriv --reuid="$AS_USER" --regid="$AS_USER" --clear-groups "$@"; fi
exec "$@"
`

func newSvcSandbox(t *testing.T) *svcSandbox {
	svcNeed(t, "unshare", "setpriv", "systemd-analyze")
	svcNeedRoot(t)
	if _, err := os.Stat("/opt"); err != nil {
		t.Skip("needs /opt as a mount point")
	}
	dir := t.TempDir()
	s := &svcSandbox{t: t, units: filepath.Join(dir, "units"), state: filepath.Join(dir, "state"),
		conf: filepath.Join(dir, "conf"), fakebin: filepath.Join(dir, "fakebin")}
	for _, d := range []string{s.units, s.state, s.conf, s.fakebin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.bin = svcBuild(t, "linux", dir, "e2e")
	if err := os.WriteFile(filepath.Join(s.fakebin, "systemctl"), []byte(svcFakeSystemctl), 0o755); err != nil {
		t.Fatal(err)
	}
	// The config as it will be seen in the sandbox: certificates next to it.
	certs := svcCerts(t, filepath.Join(s.conf, "certs"))
	for _, p := range []*string{&certs.ServerCert, &certs.ServerKey, &certs.CA} {
		*p = "/opt/postern/certs/" + filepath.Base(*p)
	}
	svcWriteFile(t, filepath.Join(s.conf, "postern.toml"), svcHubConfig(certs, "127.0.0.1:7443", "127.0.0.1:7"))
	return s
}

// run runs postern with args in the sandbox and returns its output and exit
// status. systemd says whether /run/systemd/system exists; asUser, when not
// empty, is the uid to run as.
func (s *svcSandbox) run(systemd bool, asUser string, args ...string) (string, int) {
	s.t.Helper()
	flag := "no"
	if systemd {
		flag = "yes"
	}
	env := []string{"UNITS=" + s.units, "STATE=" + s.state, "CONF=" + s.conf, "FAKEBIN=" + s.fakebin,
		"BIN=" + s.bin, "SYSTEMD=" + flag, "AS_USER=" + asUser}
	cmdArgs := append([]string{"--mount", "--propagation", "private", "sh", "-c", svcSandboxScript, "sandbox", "/opt/postern/postern"}, args...)
	out, err := svcRun(s.t, time.Minute, env, "unshare", cmdArgs...)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return out, exit.ExitCode()
	case err != nil:
		s.t.Fatalf("sandbox: %v\n%s", err, out)
	}
	return out, 0
}

// systemctl returns the fake systemctl's log and clears it.
func (s *svcSandbox) systemctl() string {
	path := filepath.Join(s.state, "systemctl.log")
	b, _ := os.ReadFile(path)
	os.Remove(path)
	return string(b)
}

func (s *svcSandbox) unit(name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(s.units, name+".service"))
	return string(b), err == nil
}

func (s *svcSandbox) flag(name string, on bool) {
	path := filepath.Join(s.state, name)
	if on {
		svcWriteFile(s.t, path, "")
	} else {
		os.Remove(path)
	}
}

// `postern service` on a systemd host: install writes the unit --print
// shows, enables it and reloads systemd; start/stop/status/uninstall drive
// systemctl; the failures say what to do and leave no unit behind.
func TestServiceInstallSystemd(t *testing.T) {
	s := newSvcSandbox(t)
	const name = "postern-partner-a"
	install := []string{"service", "install", "-c", "/opt/postern/postern.toml", "--name", name}

	check := func(t *testing.T, out string, code, wantCode int, wants ...string) {
		t.Helper()
		if code != wantCode {
			t.Errorf("exit status %d, want %d\n%s", code, wantCode, out)
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	noUnit := func(t *testing.T) {
		t.Helper()
		if u, ok := s.unit(name); ok {
			t.Errorf("a unit file was left behind:\n%q", u)
		}
	}

	t.Run("refused without root", func(t *testing.T) {
		out, code := s.run(true, "65534", install...)
		check(t, out, code, 1, "needs root: run it with sudo")
		noUnit(t)
	})
	t.Run("refused without systemd", func(t *testing.T) {
		out, code := s.run(false, "", install...)
		check(t, out, code, 1, "systemd is not running on this host", "--print")
		noUnit(t)
		if log := s.systemctl(); log != "" {
			t.Errorf("systemctl called: %q", log)
		}
	})
	t.Run("refused for a missing user", func(t *testing.T) {
		out, code := s.run(true, "", append(install, "--user", "nosuchuser")...)
		check(t, out, code, 1, `user "nosuchuser" does not exist`, "useradd --system")
		noUnit(t)
	})
	t.Run("refused for a config the sandbox hides", func(t *testing.T) {
		hidden := filepath.Join(s.conf, "postern.toml")
		if !strings.HasPrefix(hidden, "/tmp/") {
			t.Skipf("temporary folder %s is not under /tmp", s.conf)
		}
		out, code := s.run(true, "", "service", "install", "-c", hidden, "--name", name)
		check(t, out, code, 1, "is under /tmp, which the service cannot see")
		noUnit(t)
	})
	t.Run("a failed enable leaves no unit behind", func(t *testing.T) {
		s.flag("fail-enable", true)
		defer s.flag("fail-enable", false)
		out, code := s.run(true, "", install...)
		check(t, out, code, 1, "install service")
		noUnit(t)
		if log := s.systemctl(); !strings.Contains(log, "disable "+name+".service") {
			t.Errorf("the failed install was not disabled again; systemctl calls:\n%s", log)
		}
	})
	t.Run("install", func(t *testing.T) {
		printed, code := s.run(true, "", append(install, "--print")...)
		check(t, printed, code, 0, "ExecStart=/opt/postern/postern run -c /opt/postern/postern.toml --service "+name+"\n")
		if log := s.systemctl(); log != "" {
			t.Errorf("--print called systemctl: %q", log)
		}
		out, code := s.run(true, "", install...)
		check(t, out, code, 0, `service "`+name+`" installed`, "postern service start --name "+name)
		unit, ok := s.unit(name)
		if !ok {
			t.Fatal("no unit file written")
		}
		if unit != printed {
			t.Errorf("installed unit differs from --print:\n%s\n---\n%s", unit, printed)
		}
		if got, want := s.systemctl(), "enable "+name+".service\ndaemon-reload\n"; got != want {
			t.Errorf("systemctl calls %q, want %q", got, want)
		}
	})
	t.Run("install again", func(t *testing.T) {
		out, code := s.run(true, "", install...)
		check(t, out, code, 1, "already installed (/etc/systemd/system/"+name+".service)", "remove it first with `postern service uninstall --name "+name+"`, or choose another --name")
	})
	t.Run("status", func(t *testing.T) {
		out, code := s.run(true, "", "service", "status", "--name", name)
		check(t, out, code, 3, `service "`+name+`": stopped`)
		s.flag("active", true)
		defer s.flag("active", false)
		out, code = s.run(true, "", "service", "status", "--name", name)
		check(t, out, code, 0, `service "`+name+`": running`)
		s.systemctl()
	})
	for _, action := range []string{"start", "stop", "restart"} {
		t.Run(action, func(t *testing.T) {
			out, code := s.run(true, "", "service", action, "--name", name)
			check(t, out, code, 0)
			if got, want := s.systemctl(), action+" "+name+".service\n"; got != want {
				t.Errorf("systemctl calls %q, want %q", got, want)
			}
		})
	}
	t.Run("uninstall", func(t *testing.T) {
		out, code := s.run(true, "", "service", "uninstall", "--name", name)
		check(t, out, code, 0, `service "`+name+`" uninstalled`)
		noUnit(t)
		if got, want := s.systemctl(), "stop "+name+".service\ndisable "+name+".service\ndaemon-reload\n"; got != want {
			t.Errorf("systemctl calls %q, want %q", got, want)
		}
	})
	t.Run("not installed", func(t *testing.T) {
		out, code := s.run(true, "", "service", "uninstall", "--name", name)
		check(t, out, code, 1, "not installed")
		out, code = s.run(true, "", "service", "status", "--name", name)
		check(t, out, code, 4, `service "`+name+`": not installed`)
		out, code = s.run(true, "", "service", "start", "--name", name)
		check(t, out, code, 1, "not installed")
	})
}
