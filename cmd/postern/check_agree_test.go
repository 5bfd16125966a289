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
	"github.com/postern-tunnel/postern/internal/testnet"
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

// TestCheckConnectServices: --connect asks the peer for each service a
// forward through the client names, and says which it refuses and why; a
// server that does not answer is a warning when another one does (a
// standby), an error when none does.
func TestCheckConnectServices(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}}).Write(t, dir, "hub", ca)
	site := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	echo := testnet.Listen(t)
	testnet.Serve(t, echo, testnet.Echo)
	hubAddr := startAgent(t, dir, fmt.Sprintf(`name = "hub"
[tls]
cert = %q
key = %q
ca = %q
[[server]]
listen = "127.0.0.1:0"
[[service]]
name = "echo"
target = %q
allow = ["cn:site-a"]
[[service]]
name = "secret"
target = %q
allow = ["cn:someone-else"]
`, hub.Cert, hub.Key, hub.CA, echo.Addr(), echo.Addr()), io.Discard).ServerAddrs()[0].String()
	const downAddr = "127.0.0.1:1" // tcpmux: nothing listens there, a standby that is down

	site4 := func(servers string) string {
		return writeTOML(t, dir, fmt.Sprintf(`
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%s]
server_name = "hub.test"
[[forward]]
listen = "127.0.0.1:0"
service = "echo"
via = "hub"
[[forward]]
listen = "127.0.0.1:0"
service = "secret"
via = "hub"
[[forward]]
listen = "127.0.0.1:0"
service = "nosuch"
via = "hub"
`, site.Cert, site.Key, site.CA, servers))
	}
	code, out := checkRun(t, "-c", site4(fmt.Sprintf("%q, %q", hubAddr, downAddr)), "--connect")
	if code != 1 {
		t.Errorf("exit %d, want 1 (two services refused)", code)
	}
	for _, want := range []string{
		"ok      " + hubAddr + `: service "echo": the peer accepts it and reached its target`,
		"ERROR   " + hubAddr + `: service "secret": refused by peer: not allowed for CN="site-a"`,
		"ERROR   " + hubAddr + `: service "nosuch": refused by peer: unknown service "nosuch"`,
		"WARNING " + downAddr + ": connect: connection refused (a standby: another server of this client answered)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
	// With only the server that is down, it is an error.
	if code, out := checkRun(t, "-c", site4(fmt.Sprintf("%q", downAddr)), "--connect"); code != 1 ||
		!strings.Contains(out, "ERROR   "+downAddr+": connect: connection refused\n") {
		t.Errorf("only server down: exit %d\n%s", code, out)
	}
}
