package tests

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The unit `postern service install --print` shows, and the ones the
// packages ship, pass `systemd-analyze verify` and rate OK or better in
// `systemd-analyze security` (neither needs systemd as PID 1).
func TestServiceUnitVerifiesAndIsHardened(t *testing.T) {
	svcNeed(t, "systemd-analyze")
	dir := t.TempDir()
	bin := svcBuild(t, "linux", dir, "e2e")
	certs := svcCerts(t, filepath.Join(dir, "certs"))

	units := map[string]string{} // file name → contents
	for _, tc := range []struct{ name, listen string }{
		{"postern-e2e", "127.0.0.1:7443"},
		{"postern-lowport", "0.0.0.0:443"}, // keeps CAP_NET_BIND_SERVICE
	} {
		cfg := filepath.Join(dir, tc.name+".toml")
		svcWriteFile(t, cfg, svcHubConfig(certs, tc.listen, "127.0.0.1:7"))
		// The unit is stdout; warnings about the /tmp paths go to stderr.
		stdout, err := exec.Command(bin, "service", "install", "--print", "-c", cfg, "--name", tc.name).Output()
		if err != nil {
			t.Fatalf("%s: service install --print: %v", tc.name, err)
		}
		out := string(stdout)
		want := "ExecStart=" + bin + " run -c " + cfg + " --service " + tc.name + "\n"
		if !strings.Contains(out, want) {
			t.Fatalf("%s: unit lacks %q:\n%s", tc.name, want, out)
		}
		hasCap := strings.Contains(out, "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
		if hasCap != (tc.name == "postern-lowport") {
			t.Errorf("%s (listen %s): AmbientCapabilities=CAP_NET_BIND_SERVICE present=%v", tc.name, tc.listen, hasCap)
		}
		units[tc.name+".service"] = out
	}
	// The packaged units, with ExecStart pointing at a binary that exists
	// here; the template is checked as an instance.
	for file, as := range map[string]string{"postern.service": "postern.service", "postern@.service": "postern@site-a.service"} {
		b, err := os.ReadFile(filepath.Join(svcRoot(t), "packaging", "systemd", file))
		if err != nil {
			t.Fatal(err)
		}
		units[as] = strings.ReplaceAll(string(b), "ExecStart=/usr/bin/postern ", "ExecStart="+bin+" ")
	}

	levelRE := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	for name, text := range units {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			svcWriteFile(t, path, text)
			out, err := svcRun(t, time.Minute, nil, "systemd-analyze", "verify", "--man=no", path)
			if err != nil || strings.Contains(out, name) {
				t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
			out, err = svcRun(t, time.Minute, nil, "systemd-analyze", "security", "--offline=yes", "--no-pager", path)
			m := levelRE.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security %s: %v: no overall level in:\n%s", name, err, out)
			}
			score, _ := strconv.ParseFloat(m[2], 64)
			switch m[3] {
			case "PERFECT", "SAFE", "OK":
				t.Logf("%s: exposure %s %s", name, m[2], m[3])
			default:
				t.Errorf("%s: exposure %.1f %s, want OK or better:\n%s", name, score, m[3], out)
			}
		})
	}
}

// `postern run --service NAME` under systemd's notification protocol:
// READY=1 once the agent serves, WATCHDOG=1 at half WATCHDOG_USEC, SIGHUP
// is not fatal, SIGTERM sends STOPPING=1 and ends the process cleanly.
func TestServiceNotifyProtocol(t *testing.T) {
	svcNeed(t) // Linux
	dir := t.TempDir()
	bin := svcBuild(t, "linux", dir, "e2e")
	certs := svcCerts(t, filepath.Join(dir, "certs"))
	cfg := filepath.Join(dir, "hub.toml")
	svcWriteFile(t, cfg, svcHubConfig(certs, "127.0.0.1:0", svcEcho(t)))

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	// next waits for the next message that is not a watchdog ping, counting
	// the pings on the way.
	pings := 0
	next := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m := <-msgs:
				if m == "WATCHDOG=1" {
					pings++
					if want == "WATCHDOG=1" {
						return
					}
					continue
				}
				if m != want {
					t.Fatalf("sd_notify message %q, want %q", m, want)
				}
				return
			case <-timeout:
				t.Fatalf("no %s within 30s", want)
			}
		}
	}

	agent := svcStart(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, bin, "run", "-c", cfg, "--service", "hub-e2e")
	next("READY=1")
	svcServerAddr(t, agent)
	next("WATCHDOG=1")
	next("WATCHDOG=1")

	// SIGHUP (systemctl reload) must not end the process: pings go on.
	if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	before := pings
	for pings < before+3 {
		next("WATCHDOG=1")
	}
	if agent.exited() {
		t.Fatalf("SIGHUP ended the agent: %v\n%s", agent.err, agent.Log())
	}

	if err := agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1")
	select {
	case <-agent.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("agent still running 30s after SIGTERM\n%s", agent.Log())
	}
	if agent.err != nil {
		t.Fatalf("agent exit after SIGTERM: %v, want status 0\n%s", agent.err, agent.Log())
	}
}

// svcWriteFile writes a test file, failing the test on error.
func svcWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
