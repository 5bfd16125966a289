package main

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
)

// TestCheckDefaultConfig: without -c, check reads the platform's default
// file and says so; when that file is missing it says to pass -c.
func TestCheckDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.toml")
	old := defaultConfigPath
	t.Cleanup(func() { defaultConfigPath = old })
	defaultConfigPath = func() string { return path }

	code, out := checkRun(t)
	for _, want := range []string{
		"postern check: reading " + path + " (the default; -c FILE reads another)\n",
		"ERROR   config " + path + ": no such file (the default path): pass -c FILE with your config",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, want)
		}
	}

	writeTOML(t, dir, "name = 3\n")
	if code, out := checkRun(t); code != 1 || !strings.Contains(out, "reading "+path) || !strings.Contains(out, "ERROR   config "+path+":1:8: name: must be a string") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
	// With -c nothing is announced: the file is the one named.
	if _, out := checkRun(t, "-c", path); strings.Contains(out, "the default") {
		t.Errorf("-c given, yet:\n%s", out)
	}
}

func TestDefaultPath(t *testing.T) {
	want := "/etc/postern/postern.toml"
	if runtime.GOOS == "windows" {
		want = `\Postern\postern.toml`
	}
	if got := config.DefaultPath(); !strings.HasSuffix(got, want) {
		t.Errorf("DefaultPath() = %q, want it to end in %q", got, want)
	}
}
