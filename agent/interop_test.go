package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// stunnelPath finds Debian's stunnel4. CI installs it (.ci/run), so there a
// missing stunnel fails the test instead of skipping it.
func stunnelPath(t *testing.T) string {
	for _, name := range []string{"stunnel4", "stunnel"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("stunnel4 is not installed; .ci/run must install it (apt-get install stunnel4)")
	}
	t.Skip("skipping interop test: stunnel4 is not installed (apt-get install stunnel4)")
	return ""
}

// stunnelFront accepts connections and hands each to its own stunnel
// process in inetd mode (the connection is stunnel's stdin and stdout), so
// the test never has to pick a port for stunnel. service holds stunnel's
// service options (in inetd mode they go in the global section).
func stunnelFront(t *testing.T, dir, service string) net.Addr {
	bin := stunnelPath(t)
	cfg := filepath.Join(dir, "stunnel.conf")
	logPath := filepath.Join(dir, "stunnel.log")
	conf := fmt.Sprintf("pid =\ndebug = 5\noutput = %s\n%s", logPath, service)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ln := testnet.Listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				continue
			}
			cmd := exec.Command(bin, cfg)
			cmd.Stdin, cmd.Stdout = f, f
			if err := cmd.Start(); err != nil {
				t.Errorf("start stunnel: %v", err)
			}
			f.Close()
			go cmd.Wait()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("stunnel log:\n%s", b)
			}
		}
	})
	return ln.Addr()
}

// TestInteropPosternClientToStunnelServer: a [[client]] with mux = false
// reaches an stunnel server that verifies client certificates (verify=2).
func TestInteropPosternClientToStunnelServer(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	target := testnet.Listen(t)
	testnet.Serve(t, target, testnet.Echo)
	front := stunnelFront(t, dir, fmt.Sprintf(
		"connect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverify = 2\n",
		target.Addr(), p.hub.Cert, p.hub.Key, p.hub.CA))
	toml := strings.Replace(siteTOML(p, front.String(), "echo"), "[[client]]\n", "[[client]]\nmux = false\n", 1)
	site := start(t, dir, "site", toml)

	got, err := echoOnce(t, site.ForwardAddrs()[0], "through stunnel")
	if err != nil || got != "through stunnel" {
		t.Fatalf("Postern → stunnel → target: %q, %v", got, err)
	}
}

// TestInteropStunnelClientToPosternServer: an stunnel client with its
// client certificate reaches a [[server]] with mux = false; an identity not
// in allow is refused.
func TestInteropStunnelClientToPosternServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allow   string
		allowed bool
	}{
		{"allowed", "dns:site-a.test", true},
		{"identity not allowed", "dns:partner-b.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			target := testnet.Listen(t)
			testnet.Serve(t, target, testnet.Echo)
			hubCfg := strings.Replace(hubTOML(p, serviceTOML("echo", target.Addr().String(), tc.allow)),
				`listen = "127.0.0.1:0"`, "listen = \"127.0.0.1:0\"\nmux = false\nservice = \"echo\"", 1)
			hub := start(t, dir, "hub", hubCfg)
			front := stunnelFront(t, dir, fmt.Sprintf(
				"client = yes\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\ncheckHost = hub.test\n",
				hub.ServerAddrs()[0], p.site.Cert, p.site.Key, p.site.CA))

			got, err := echoOnce(t, front, "from stunnel")
			if tc.allowed {
				if err != nil || got != "from stunnel" {
					t.Fatalf("stunnel → Postern → target: %q, %v", got, err)
				}
				return
			}
			if got != "" || (err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF)) {
				t.Fatalf("refused identity got %q, %v", got, err)
			}
			hub.log.WaitFor(t, 10*time.Second, "raw TLS connection refused", "service=echo", `reason="identity not in allow`, "dns:site-a.test")
		})
	}
}
