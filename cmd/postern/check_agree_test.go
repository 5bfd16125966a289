package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
)

// TestCheckAndRunAgree: entries that postern run refuses, postern check
// refuses too, in the same words. (check used to pass a reverse forward's
// via that run rejected, and config accepted allow entries identity
// parsing rejects.)
func TestCheckAndRunAgree(t *testing.T) {
	for _, tc := range []struct{ name, toml string }{
		{"via with a port", "[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = \"db\"\nvia = \"dns:site-a.example.com:extra\"\n"},
		{"allow with an empty label", "[[service]]\nname = \"db\"\ntarget = \"127.0.0.1:5432\"\nallow = [\"dns:a..b\"]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := testca.New(t, "Test CA")
			hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
			path := writeTOML(t, dir, fmt.Sprintf("name = \"hub\"\n[tls]\ncert = %q\nkey = %q\nca = %q\n[[server]]\nlisten = \"127.0.0.1:0\"\n%s",
				hub.Cert, hub.Key, hub.CA, tc.toml))
			// postern run loads the config, then builds the agent; either
			// may refuse. postern check must refuse with the same words.
			var runErr error
			if cfg, err := config.Load(path); err != nil {
				runErr = err
			} else if _, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), agent.Options{}); err != nil {
				runErr = err
			}
			if runErr == nil {
				t.Fatal("postern run accepted it")
			}
			code, out := checkRun(t, "-c", path)
			if code == 0 {
				t.Fatalf("postern check passed a config postern run refuses (%v):\n%s", runErr, out)
			}
			if !strings.Contains(out, runErr.Error()) {
				t.Errorf("postern check says:\n%s\nwant run's words:\n%s", out, runErr)
			}
		})
	}
}
