package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/osservice"
)

const serviceTestConfig = `name = "hub"
[tls]
cert = "certs/hub.crt"
key  = "certs/hub.key"
ca   = "certs/ca.crt"

[[server]]
listen = "%s"

[[service]]
name   = "echo"
target = "127.0.0.1:7"
allow  = ["cn:site-a"]
`

func writeServiceConfig(t *testing.T, listen string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub.toml")
	if err := os.WriteFile(path, []byte(strings.Replace(serviceTestConfig, "%s", listen, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCmdServiceUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no action", nil, 2, "usage: postern service ACTION"},
		{"unknown action", []string{"frobnicate"}, 2, `unknown action "frobnicate"`},
		{"unknown flag", []string{"install", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"extra argument", []string{"status", "extra"}, 2, `unexpected argument "extra"`},
		{"bad name", []string{"status", "--name", "a/b"}, 2, `service name "a/b"`},
		{"install without a config", []string{"install"}, 2, "-c FILE is required"},
		{"install with a broken config", []string{"install", "--print", "-c", writeBroken(t)}, 1, "fix the config first (postern check -c"},
		{"install with a missing config", []string{"install", "--print", "-c", filepath.Join(t.TempDir(), "nope.toml")}, 1, "nope.toml"},
		{"flags before the action", []string{"--name", "a/b", "status"}, 2, `service name "a/b"`},
		{"configure on this OS", []string{"configure"}, 1, "configure service"},
	}
	if runtime.GOOS == "windows" {
		tests = tests[:len(tests)-1] // configure is real there
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdService(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, &stdout, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, &stderr)
			}
		})
	}
}

func writeBroken(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broken.toml")
	if err := os.WriteFile(path, []byte("name = \"x\"\nbogus_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCmdServiceInstallPrint(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "windows" {
		t.Skipf("services are installed on Linux and Windows only, not %s", runtime.GOOS)
	}
	cfg := writeServiceConfig(t, "127.0.0.1:7443")
	var stdout, stderr bytes.Buffer
	// A relative path: the service must get the absolute one.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if code := cmdService([]string{"install", "--print", "-c", rel, "--name", "partner-a"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d: %s", code, &stderr)
	}
	want := "run -c " + cfg + " --service partner-a"
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("--print lacks %q:\n%s", want, &stdout)
	}
	// The config is under /tmp: --print warns as the real install refuses.
	if runtime.GOOS == "linux" && strings.HasPrefix(cfg, "/tmp/") {
		want := "postern service install: warning: " + cfg + " is under /tmp, which the service cannot see (ProtectHome=, PrivateTmp=): move it, e.g. to /usr/local/bin or /etc/postern; install refuses this"
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--print stderr lacks %q:\n%s", want, &stderr)
		}
	}
}

func TestListensBelow1024(t *testing.T) {
	tests := []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:7443", false},
		{"0.0.0.0:443", true},
		{"[::1]:1023", true},
		{"[::1]:1024", false},
		{"127.0.0.1:0", false}, // any free port
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			cfg, err := config.Load(writeServiceConfig(t, tt.listen))
			if err != nil {
				t.Fatal(err)
			}
			if got := listensBelow1024(cfg); got != tt.want {
				t.Errorf("listensBelow1024(%s) = %v, want %v", tt.listen, got, tt.want)
			}
		})
	}
}

func TestServiceRunReportsFailure(t *testing.T) {
	var stderr bytes.Buffer
	code := serviceRun("t", func(ctx context.Context, ready func(osservice.Drain)) error {
		ready(osservice.Drain{})
		return errors.New("listen 127.0.0.1:7443: address already in use")
	}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "postern: listen 127.0.0.1:7443: address already in use") {
		t.Errorf("exit status %d, stderr %q", code, &stderr)
	}
	stderr.Reset()
	if code := serviceRun("t", func(ctx context.Context, ready func(osservice.Drain)) error { return nil }, &stderr); code != 0 {
		t.Errorf("exit status %d for a clean run, stderr %q", code, &stderr)
	}
}
