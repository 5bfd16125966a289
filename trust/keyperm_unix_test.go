//go:build unix

package trust

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
)

func TestKeyModeProblem(t *testing.T) {
	own := func(gid int) bool { return gid == 1000 }
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		gid   int
		group string
		want  string
	}{
		{"owner only", 0o600, 0, "root", ""},
		{"service group", 0o640, 998, "postern", ""},
		{"the agent's own group", 0o640, 1000, "site", ""},
		{"a foreign group", 0o640, 50, "staff",
			`readable by group "staff" (mode 0640), which this agent does not run as: chgrp postern /k.key, or chmod 600 /k.key when the agent runs as the file's owner`},
		{"a foreign group without a name", 0o640, 4242, "",
			`readable by group "4242" (mode 0640)`},
		{"others, service group", 0o644, 998, "postern", "readable by every user (mode 0644): chmod o-rwx /k.key"},
		{"others only", 0o604, 1000, "site", "readable by every user (mode 0604): chmod o-rwx /k.key"},
		{"others may write", 0o602, 998, "postern", "writable by every user (mode 0602): chmod o-rwx /k.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := keyModeProblem("/k.key", tc.mode, tc.gid, tc.group, own)
			if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKeyPermissionLogged: the agent says at start (SetLogger) and after a
// reload that brought new material that its key is readable by everyone.
func TestKeyPermissionLogged(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	f := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	if err := os.Chmod(f.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMaterial(Files{Cert: f.Cert, Key: f.Key, CA: f.CA, MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	c := NewCredentials(m)
	c.SetLogger(slog.New(slog.NewTextHandler(&log, nil)))
	want := `msg="private key file is readable by more than this agent" key=` + f.Key + ` problem="readable by every user (mode 0644): chmod o-rwx ` + f.Key + `"`
	if !strings.Contains(log.String(), want) {
		t.Fatalf("log at start:\n%s\nwant %s", log.String(), want)
	}

	log.Reset()
	os.Mkdir(filepath.Join(dir, "next"), 0o700)
	next := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, filepath.Join(dir, "next"), "site", ca)
	for _, p := range [][2]string{{next.Cert, f.Cert}, {next.Key, f.Key}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	if !strings.Contains(log.String(), want) {
		t.Errorf("log after reload:\n%s\nwant %s", log.String(), want)
	}

	log.Reset()
	os.Chmod(f.Key, 0o600)
	c.SetLogger(slog.New(slog.NewTextHandler(&log, nil)))
	if log.Len() != 0 {
		t.Errorf("mode 0600 logged:\n%s", log.String())
	}
}
