package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// e2eRunCommand runs the postern binary with args and returns its exit
// code, stdout and stderr.
func e2eRunCommand(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2eBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("postern %s did not finish within 10s; stderr:\n%s", strings.Join(args, " "), errOut.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("postern %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// TestE2EConfigError: `postern run` with a config that has an unknown key
// or a duration written as a bare number refuses to start: it exits
// non-zero and prints one line "config PATH:LINE:COL: ..." naming the key.
func TestE2EConfigError(t *testing.T) {
	for _, tc := range []struct {
		name string
		toml string
		want string // after "config PATH:"
	}{
		{
			name: "unknown key",
			toml: `name = "site-a"

[[forward]]
listen = "127.0.0.1:0"
service = "erp-db"
via = "hub"
tunnel_timeout = "3s"
`,
			want: `7:1: unknown key "forward.tunnel_timeout"`,
		},
		{
			name: "unknown key in a table",
			toml: `name = "site-a"

[log]
level = "debug"
colour = "auto"
`,
			want: `5:1: unknown key "log.colour"`,
		},
		{
			name: "bare integer duration",
			toml: `name = "site-a"
shutdown_timeout = 30
`,
			want: `2:20: shutdown_timeout: duration must be a string with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d" (got 30)`,
		},
		{
			name: "bare integer duration in a table",
			toml: `name = "site-a"

[[client]]
name = "hub"
servers = ["hub.example.com:7443"]
backoff_max = 500
`,
			want: `6:15: client.backoff_max: duration must be a string with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d" (got 500)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := e2eWriteConfig(t, t.TempDir(), "bad", tc.toml)
			code, stdout, stderr := e2eRunCommand(t, "run", "-c", path)
			if code == 0 {
				t.Fatalf("postern run exited 0 with a bad config; stderr:\n%s", stderr)
			}
			want := fmt.Sprintf("config %s:%s", path, tc.want)
			if !strings.Contains(stderr, want+"\n") {
				t.Errorf("stderr:\n%s\nwant a line ending in:\n%s", stderr, want)
			}
			if strings.Contains(stderr, "running") || stdout != "" {
				t.Errorf("the agent started or printed to stdout; stdout %q, stderr:\n%s", stdout, stderr)
			}
		})
	}
}

// TestE2EVersion: `postern version` prints the version and exits 0.
func TestE2EVersion(t *testing.T) {
	code, stdout, stderr := e2eRunCommand(t, "version")
	if code != 0 {
		t.Fatalf("postern version exited %d; stderr:\n%s", code, stderr)
	}
	if !regexp.MustCompile(`^postern \S+ \(go1\.\d+\S* \S+/\S+\)\n$`).MatchString(stdout) {
		t.Fatalf("postern version printed %q, want \"postern VERSION (goX.Y, OS/ARCH)\"", stdout)
	}
}
