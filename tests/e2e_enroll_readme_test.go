//go:build unix

package tests

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2EEnrollReadme: the README's "Certificates" section as written.
// Its first block must hold three commands (pki init, pki invite, enroll
// && run); they run with the hub.toml and site.toml the section shows,
// each in its own folder, and the site's forward then reaches the hub's
// service. What the test changes is only what a test must: the hub's
// public address (hub.example.com:7443) is a loopback port forwarded to
// the hub's ephemeral listener, as a NAT port forward would; listen
// ports are ephemeral; the service's target is an echo server; and the
// token is the one invite printed.
func TestE2EEnrollReadme(t *testing.T) {
	e2eBinary(t)
	section := e2eReadmeSection(t, "## Certificates")
	cmds := e2eReadmeCommands(t, e2eReadmeBlock(t, section, "", ""))
	if len(cmds) != 3 {
		t.Fatalf("the README's invitation flow has %d command lines, want 3: %q", len(cmds), cmds)
	}
	hubTOML := e2eReadmeBlock(t, section, "toml", "# hub.toml\n")
	siteTOML := e2eReadmeBlock(t, section, "toml", "# site.toml\n")

	echoAddr := e2eServe(t, testnet.Echo)
	front := testnet.Listen(t) // hub.example.com:7443, as sites see it
	public := front.Addr().String()
	subst := strings.NewReplacer("hub.example.com:7443", public, "0.0.0.0:7443", "127.0.0.1:0",
		"127.0.0.1:15432", "127.0.0.1:0", "10.0.0.5:5432", echoAddr)
	hubDir, siteDir := t.TempDir(), t.TempDir()
	hubConfig := e2eWriteConfig(t, hubDir, "hub", subst.Replace(hubTOML))
	siteConfig := e2eWriteConfig(t, siteDir, "site", subst.Replace(siteTOML))

	// On the hub: init, then run it (the README: any time after init), then invite.
	e2eReadmeRun(t, hubDir, subst.Replace(cmds[0]))
	hub := e2eStartAgent(t, "hub", hubConfig)
	hubAddr := hub.serverAddr(t)
	testnet.Serve(t, front, func(c *net.TCPConn) { e2eRelay(c, hubAddr) })
	token := strings.TrimSpace(e2eReadmeRun(t, hubDir, subst.Replace(cmds[1])))
	if !strings.HasPrefix(token, "postern-invite-1.") || strings.ContainsAny(token, " \n") {
		t.Fatalf("invite printed %q, want the token alone", token)
	}

	// On the site: enroll && run.
	enroll, run, ok := strings.Cut(cmds[2], " && ")
	if !ok || !strings.Contains(enroll, "postern-invite-1.…") {
		t.Fatalf("the site's command line is %q: want `postern enroll --token postern-invite-1.… ... && postern run ...`", cmds[2])
	}
	e2eReadmeRun(t, siteDir, strings.ReplaceAll(subst.Replace(enroll), "postern-invite-1.…", token))
	if want := []string{"postern", "run", "-c", "site.toml"}; strings.Join(strings.Fields(run), " ") != strings.Join(want, " ") {
		t.Fatalf("the site's run command is %q, want %q", run, want)
	}
	site := e2eStartAgent(t, "site", siteConfig) // `postern run -c site.toml`, with the path the helper needs
	fwd := site.forwardAddr(t, "erp-db")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	hub.log.WaitFor(t, 5*time.Second, "enrollment granted", "dns:site-b.example.com")

	msg := []byte("from nothing to a working partner tunnel")
	c := testnet.Dial(t, fwd)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("through the site's forward: %q, %v; want %q", got, err, msg)
	}
}

// e2eReadmeSection is the README's section that starts with heading,
// up to the next heading of the same level.
func e2eReadmeSection(t *testing.T, heading string) string {
	t.Helper()
	root, err := e2eModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// e2eReadmeBlock is the body of the first code block in section whose
// language is lang ("" or "toml") and whose body starts with first.
func e2eReadmeBlock(t *testing.T, section, lang, first string) string {
	t.Helper()
	for rest := section; ; {
		_, after, ok := strings.Cut(rest, "\n```")
		if !ok {
			t.Fatalf("README section has no ```%s block starting %q", lang, first)
		}
		info, after, _ := strings.Cut(after, "\n")
		body, tail, ok := strings.Cut(after, "\n```\n")
		if !ok {
			t.Fatalf("README: unclosed ```%s block", info)
		}
		if info == lang && strings.HasPrefix(body, first) {
			return body + "\n"
		}
		rest = "\n" + tail
	}
}

// e2eReadmeCommands are the lines of a README block that run postern,
// without their trailing comments.
func e2eReadmeCommands(t *testing.T, block string) []string {
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		if !strings.HasPrefix(line, "postern ") {
			continue
		}
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		cmds = append(cmds, strings.TrimSpace(line))
	}
	return cmds
}

// e2eReadmeRun runs one README command line (postern ARGS, double quotes
// grouping words as a shell does) in dir and returns its stdout.
func e2eReadmeRun(t *testing.T, dir, line string) string {
	t.Helper()
	var args []string
	var word strings.Builder
	quoted, inWord := false, false
	for _, r := range line + " " {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				args = append(args, word.String())
			}
			word.Reset()
			inWord = false
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if len(args) == 0 || args[0] != "postern" {
		t.Fatalf("README command %q does not run postern", line)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(e2eBinary(t), args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &errb
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("README command %q in %s: %v\n%s%s", line, dir, err, out.String(), errb.String())
	}
	return out.String()
}

// e2eRelay forwards c to addr and back until both sides are done, as a
// port forward in front of the hub does.
func e2eRelay(c *net.TCPConn, addr string) {
	up, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, up)
	c.CloseWrite()
	<-done
}
