package tests

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The Windows service for real, under Debian's wine 8: the MSI installs and
// registers it, the SCM starts it (RUNNING), the Windows agent carries a
// connection through a tunnel to a Linux agent on loopback, `sc stop` drains
// it, a newer MSI upgrades it in place, `msiexec /x` removes it; then the
// same with `postern.exe service install/start/status/stop/uninstall`.
//
// Go 1.22+ Windows programs need bcryptprimitives.dll!ProcessPrng, which
// wine 8 lacks: the test builds the shim in packaging/windows/prngshim with
// mingw-w64 and puts it into a private wine prefix.
func TestWindowsServiceUnderWine(t *testing.T) {
	svcNeed(t, "wine", "wineboot", "wineserver", "x86_64-w64-mingw32-gcc", "wixl", "msibuild", "msiinfo")
	begin := time.Now()
	dir := t.TempDir()

	msi1 := svcBuildMSI(t, dir, "v0.0.1")
	msi2 := svcBuildMSI(t, dir, "v0.0.2")
	exe := svcBuild(t, "windows", dir, "e2e")
	linuxBin := svcBuild(t, "linux", dir, "e2e")
	w := newSvcWine(t, filepath.Join(dir, "prefix"))
	t.Logf("built and wine prefix ready in %s", time.Since(begin).Round(time.Second))

	// The Linux agent: tunnel server on loopback offering "echo" to CN site-a.
	certs := svcCerts(t, filepath.Join(dir, "certs"))
	hubCfg := filepath.Join(dir, "hub.toml")
	svcWriteFile(t, hubCfg, svcHubConfig(certs, "127.0.0.1:0", svcEcho(t)))
	hub := svcStart(t, nil, linuxBin, "run", "-c", hubCfg)
	hubAddr := svcServerAddr(t, hub)

	// The Windows agent's config: a client to the hub and a forward to its
	// "echo", certificates next to the config.
	fwd := fmt.Sprintf("127.0.0.1:%d", svcFreePort(t))
	siteCfg := svcSiteConfig(hubAddr, fwd)
	putConfig := func(winDir string) {
		host := w.host(winDir)
		svcWriteFile(t, filepath.Join(host, "postern.toml"), siteCfg)
		for from, to := range map[string]string{certs.ClientCert: "client.crt", certs.ClientKey: "client.key", certs.CA: "ca.crt"} {
			if err := svcCopyFile(from, filepath.Join(host, "certs", to)); err != nil {
				t.Fatal(err)
			}
		}
	}
	through := func(what string) {
		t.Helper()
		svcWaitFor(t, 60*time.Second, what, func() (bool, string) {
			if err := svcRoundTrip(fwd, what); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}

	ok := t.Run("msi install", func(t *testing.T) {
		w.msiexec(t, "/i", w.winPath(msi1), "/qn")
		if st := w.state(t, "postern"); st != "STOPPED" {
			t.Fatalf("after install: state %q, want STOPPED (installed, not started)", st)
		}
		svc := w.reg(t, `HKLM\SYSTEM\CurrentControlSet\Services\postern`)
		for _, want := range []string{
			`postern.exe run -c "C:\ProgramData\Postern\postern.toml" --service postern`,
			"Start    REG_DWORD    0x2", // automatic
		} {
			if !strings.Contains(svc, want) {
				t.Errorf("service registry key lacks %q:\n%s", want, svc)
			}
		}
		if ev := w.reg(t, `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\postern`); !strings.Contains(ev, `EventMessageFile    REG_EXPAND_SZ    %SystemRoot%\System32\EventCreate.exe`) {
			t.Errorf("Event Log source:\n%s", ev)
		}
		for _, f := range []string{`C:\Program Files\Postern\postern.exe`, `C:\ProgramData\Postern\postern.toml`} {
			if _, err := os.Stat(w.host(f)); err != nil {
				t.Errorf("not installed: %v", err)
			}
		}
	})
	ok = ok && t.Run("msi service carries a connection", func(t *testing.T) {
		putConfig(`C:\ProgramData\Postern`)
		w.diagnoseOnFailure(t, `C:\Program Files\Postern\postern.exe`, `C:\ProgramData\Postern\postern.toml`)
		w.must(t, time.Minute, "sc", "start", "postern")
		w.waitState(t, "postern", "RUNNING", 60*time.Second)
		through("through the MSI-installed service")
	})
	ok = ok && t.Run("sc stop drains", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", fwd, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := svcEchoOn(c, "before stop"); err != nil {
			t.Fatal(err)
		}
		w.must(t, time.Minute, "sc", "stop", "postern")
		// The connection in flight keeps the service in STOP_PENDING …
		w.waitState(t, "postern", "STOP_PENDING", 30*time.Second)
		// … while the forward takes no new connections …
		svcWaitFor(t, 20*time.Second, "the forward to refuse new connections", func() (bool, string) {
			if err := svcRoundTrip(fwd, "after stop"); err != nil {
				return true, ""
			}
			return false, "a new connection still went through"
		})
		// … and the one in flight still works.
		if err := svcEchoOn(c, "while draining"); err != nil {
			t.Fatalf("connection in flight during the drain: %v", err)
		}
		if st := w.state(t, "postern"); st != "STOP_PENDING" {
			t.Fatalf("state %q while a connection is in flight, want STOP_PENDING", st)
		}
		c.Close()
		closed := time.Now()
		w.waitState(t, "postern", "STOPPED", 30*time.Second)
		// shutdown_timeout is 15s: stopping well before it means the drain
		// ended with the last connection, not at its deadline.
		if d := time.Since(closed); d > 10*time.Second {
			t.Errorf("stopped %s after the last connection closed; want well under shutdown_timeout (15s)", d)
		}
		if q := w.query(t, "postern"); !regexp.MustCompile(`WIN32_EXIT_CODE\s*:\s*0\b`).MatchString(q) {
			t.Errorf("exit code after a clean stop:\n%s", q)
		}
	})
	ok = ok && t.Run("msi upgrade in place", func(t *testing.T) {
		w.must(t, time.Minute, "sc", "start", "postern")
		w.waitState(t, "postern", "RUNNING", 60*time.Second)
		w.msiexec(t, "/i", w.winPath(msi2), "/qn")
		out := w.must(t, time.Minute, `C:\Program Files\Postern\postern.exe`, "version")
		if !strings.Contains(out, "postern v0.0.2 ") {
			t.Errorf("installed binary after the upgrade: %q, want v0.0.2", out)
		}
		if b, err := os.ReadFile(w.host(`C:\ProgramData\Postern\postern.toml`)); err != nil || string(b) != siteCfg {
			t.Errorf("the upgrade replaced the edited config (err %v):\n%s", err, b)
		}
		if n := w.products(t, "Postern"); n != 1 {
			t.Errorf("%d products named Postern installed after the upgrade, want 1", n)
		}
		// The upgrade stopped the service and started it again.
		w.waitState(t, "postern", "RUNNING", 60*time.Second)
		through("through the upgraded service")
	})
	if ok {
		t.Run("msi uninstall", func(t *testing.T) {
			w.msiexec(t, "/x", w.winPath(msi2), "/qn")
			if st := w.state(t, "postern"); st != "" {
				t.Errorf("service still registered after uninstall: %s", st)
			}
			if _, err := os.Stat(w.host(`C:\Program Files\Postern\postern.exe`)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("postern.exe after uninstall: %v", err)
			}
			if out, err := w.wine(t, time.Minute, "reg", "query", `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\postern`); err == nil {
				t.Errorf("Event Log source still registered:\n%s", out)
			}
			if _, err := os.Stat(w.host(`C:\ProgramData\Postern\postern.toml`)); err != nil {
				t.Errorf("the user's config is kept on uninstall: %v", err)
			}
			if n := w.products(t, "Postern"); n != 0 {
				t.Errorf("%d products named Postern after uninstall", n)
			}
		})
	}
	t.Run("postern service install, start, stop, uninstall", func(t *testing.T) {
		const name = "postern-direct"
		putConfig(`C:\postern`)
		if err := svcCopyFile(exe, w.host(`C:\postern\postern.exe`)); err != nil {
			t.Fatal(err)
		}
		postern := func(args ...string) (string, int) {
			t.Helper()
			out, err := w.wine(t, 2*time.Minute, append([]string{`C:\postern\postern.exe`}, args...)...)
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return out, exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return out, 0
		}
		expect := func(out string, code, wantCode int, want string) {
			t.Helper()
			if code != wantCode || !strings.Contains(out, want) {
				t.Fatalf("exit status %d (want %d), output lacks %q:\n%s", code, wantCode, want, out)
			}
		}
		install := []string{"service", "install", "-c", `C:\postern\postern.toml`, "--name", name}
		out, code := postern(install...)
		expect(out, code, 0, `service "`+name+`" installed`)
		if svc := w.reg(t, `HKLM\SYSTEM\CurrentControlSet\Services\`+name); !strings.Contains(svc, `C:\postern\postern.exe run -c C:\postern\postern.toml --service `+name) {
			t.Errorf("service command line:\n%s", svc)
		}
		out, code = postern(install...)
		expect(out, code, 1, "already installed")
		out, code = postern("service", "status", "--name", name)
		expect(out, code, 3, "stopped")

		out, code = postern("service", "start", "--name", name)
		expect(out, code, 0, "started")
		if st := w.state(t, name); st != "RUNNING" {
			t.Fatalf("state %q after `service start`, want RUNNING", st)
		}
		through("through the service postern.exe installed")
		out, code = postern("service", "status", "--name", name)
		expect(out, code, 0, "running")

		out, code = postern("service", "stop", "--name", name)
		expect(out, code, 0, "stopped")
		if st := w.state(t, name); st != "STOPPED" {
			t.Fatalf("state %q after `service stop`, want STOPPED", st)
		}
		out, code = postern("service", "uninstall", "--name", name)
		expect(out, code, 0, "uninstalled")
		if st := w.state(t, name); st != "" {
			t.Errorf("still registered after uninstall: %s", st)
		}
		if out, err := w.wine(t, time.Minute, "reg", "query", `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\`+name); err == nil {
			t.Errorf("Event Log source still registered:\n%s", out)
		}
		out, code = postern("service", "uninstall", "--name", name)
		expect(out, code, 1, "not installed")
		out, code = postern("service", "status", "--name", name)
		expect(out, code, 4, "not installed")
	})
	t.Logf("wine test took %s", time.Since(begin).Round(time.Second))
}

// svcSiteConfig is the Windows agent: a client of the hub and a forward to
// its "echo", certificate paths relative to the config.
func svcSiteConfig(hub, fwd string) string {
	return fmt.Sprintf(`name = "site-a"
shutdown_timeout = "15s"

[tls]
cert = "certs/client.crt"
key  = "certs/client.key"
ca   = "certs/ca.crt"

[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"

[[forward]]
listen  = %q
service = "echo"
via     = "hub"
`, hub, fwd)
}

// svcBuildMSI runs packaging/build.sh msi for version and returns the MSI.
func svcBuildMSI(t *testing.T, dir, version string) string {
	t.Helper()
	dist := filepath.Join(dir, "dist-"+version)
	cmd := exec.Command("packaging/build.sh", "msi")
	cmd.Dir = svcRoot(t)
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packaging/build.sh msi: %v\n%s", err, out)
	}
	msis, _ := filepath.Glob(filepath.Join(dist, "*.msi"))
	if len(msis) != 1 {
		t.Fatalf("build.sh made %d MSIs in %s, want 1", len(msis), dist)
	}
	return msis[0]
}

// svcWine is a private, headless wine prefix.
type svcWine struct {
	prefix string
	env    []string
}

func newSvcWine(t *testing.T, prefix string) *svcWine {
	t.Helper()
	debug := "-all"
	if d := os.Getenv("POSTERN_WINEDEBUG"); d != "" { // e.g. err+all,+service
		debug = d
	}
	w := &svcWine{prefix: prefix, env: []string{
		"WINEPREFIX=" + prefix,
		"WINEARCH=win64",
		"WINEDEBUG=" + debug,
		"DISPLAY=", "WAYLAND_DISPLAY=", // headless
		"WINEDLLOVERRIDES=mscoree,mshtml=", // no Mono/Gecko install prompts
	}}
	if os.Getenv("HOME") == "" { // wine keeps per-user state under HOME
		w.env = append(w.env, "HOME="+filepath.Dir(prefix))
	}
	t.Cleanup(func() {
		// Ends services.exe, the agents and every other process of the prefix.
		svcRun(t, 30*time.Second, w.env, "wineserver", "-k")
		svcRun(t, 30*time.Second, w.env, "wineserver", "-w")
	})
	svcMust(t, 5*time.Minute, w.env, "wineboot", "-i")
	// wineboot -i leaves two services.exe behind, each answering on the
	// SCM's pipe with its own idea of which services exist: start afresh.
	svcMust(t, 30*time.Second, w.env, "wineserver", "-k")
	svcMust(t, 30*time.Second, w.env, "wineserver", "-w")
	// A wineserver that stays: by default it ends the prefix's system
	// processes (services.exe) a few seconds after the last program
	// exits, and the next wine command then boots the prefix again, whose
	// services.exe starts every automatic service. A service the test had
	// just stopped was then RUNNING again at the next `sc query` whenever
	// the machine was slow enough for that gap to pass.
	svcMust(t, 30*time.Second, w.env, "wineserver", "-p")
	shim := filepath.Join(svcRoot(t), "packaging", "windows", "prngshim")
	svcMust(t, 2*time.Minute, nil, "x86_64-w64-mingw32-gcc", "-shared", "-O2", "-s",
		"-o", w.host(`C:\windows\system32\bcryptprimitives.dll`),
		filepath.Join(shim, "bcryptprimitives.c"), filepath.Join(shim, "bcryptprimitives.def"), "-ladvapi32")
	return w
}

// host maps a C:\ path into the prefix.
func (w *svcWine) host(win string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(win, `C:\`), `c:\`)
	return filepath.Join(w.prefix, "drive_c", filepath.FromSlash(strings.ReplaceAll(rel, `\`, "/")))
}

// winPath maps a host path to wine's Z: drive.
func (w *svcWine) winPath(host string) string {
	return "Z:" + strings.ReplaceAll(host, "/", `\`)
}

func (w *svcWine) wine(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	return svcRun(t, timeout, w.env, "wine", args...)
}

func (w *svcWine) must(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	return svcMust(t, timeout, w.env, "wine", args...)
}

// diagnoseOnFailure: when t fails, run the agent in the foreground for a
// few seconds and log what it says. Under the SCM its log goes nowhere (the
// Event Log, which wine keeps nowhere either).
func (w *svcWine) diagnoseOnFailure(t *testing.T, exe, cfg string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, err := w.wine(t, 10*time.Second, exe, "run", "-c", cfg)
		t.Logf("%s run -c %s in the foreground (%v):\n%s", exe, cfg, err, out)
	})
}

// msiexec runs msiexec and waits for it to finish for real: wine's
// `msiexec` may return while its installer process still runs.
func (w *svcWine) msiexec(t *testing.T, args ...string) {
	t.Helper()
	w.must(t, 3*time.Minute, append([]string{"msiexec"}, args...)...)
	svcWaitFor(t, 2*time.Minute, "msiexec to exit", func() (bool, string) {
		if pid := w.running("msiexec"); pid != "" {
			return false, "msiexec still running as pid " + pid
		}
		return true, ""
	})
}

// running returns the pid of a process of this prefix whose command line
// contains name, or "".
func (w *svcWine) running(name string) string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !strings.Contains(strings.ToLower(string(cmdline)), name) {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(p, "environ"))
		if err == nil && strings.Contains(string(environ), "WINEPREFIX="+w.prefix+"\x00") {
			return filepath.Base(p)
		}
	}
	return ""
}

func (w *svcWine) reg(t *testing.T, key string) string {
	t.Helper()
	return w.must(t, time.Minute, "reg", "query", key)
}

func (w *svcWine) query(t *testing.T, name string) string {
	t.Helper()
	out, _ := w.wine(t, time.Minute, "sc", "query", name)
	return out
}

var svcStateRE = regexp.MustCompile(`STATE\s*:\s*\d+\s+(\w+)`)

// state is the service's state as `sc query` shows it, "" if not installed.
func (w *svcWine) state(t *testing.T, name string) string {
	t.Helper()
	if m := svcStateRE.FindStringSubmatch(w.query(t, name)); m != nil {
		return m[1]
	}
	return ""
}

func (w *svcWine) waitState(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	svcWaitFor(t, timeout, "service "+name+" "+want, func() (bool, string) {
		q := w.query(t, name)
		m := svcStateRE.FindStringSubmatch(q)
		return m != nil && m[1] == want, q
	})
}

// products counts installed products whose DisplayName contains name.
func (w *svcWine) products(t *testing.T, name string) int {
	t.Helper()
	const key = `HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall`
	const long = `HKEY_LOCAL_MACHINE\SOFTWARE\MICROSOFT\WINDOWS\CURRENTVERSION\UNINSTALL\`
	// Right after msiexec has exited, wine's reg has once failed to open
	// the key (exit status 1, no output) on a loaded machine: ask again
	// until it answers.
	var list string
	svcWaitFor(t, time.Minute, "reg query "+key, func() (bool, string) {
		out, err := w.wine(t, time.Minute, "reg", "query", key)
		list = out
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		return true, ""
	})
	n := 0
	for _, line := range strings.Split(list, "\n") {
		sub := strings.TrimSpace(line) // reg lists each subkey by its full name
		if !strings.HasPrefix(strings.ToUpper(sub), long) {
			continue
		}
		if out, err := w.wine(t, time.Minute, "reg", "query", sub, "/v", "DisplayName"); err == nil && strings.Contains(out, name) {
			n++
		}
	}
	return n
}

func svcCopyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
