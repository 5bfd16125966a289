package tests

// Helpers for the service and package tests (service_*_test.go,
// package_*_test.go). Their names start with svc so they cannot collide with
// other end-to-end tests in this package.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// svcRoot is the module root.
func svcRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// svcNeed skips the test when a tool is missing, saying which Debian package
// has it; in CI (CI=true), where .ci/run installs them all, it fails instead.
func svcNeed(t *testing.T, tools ...string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("runs on Linux only (Debian's tools), not %s", runtime.GOOS)
	}
	packages := map[string]string{
		"systemd-analyze": "systemd", "rpm": "rpm", "dpkg-deb": "dpkg",
		"wine": "wine and wine64", "wineboot": "wine", "wineserver": "wine",
		"x86_64-w64-mingw32-gcc": "gcc-mingw-w64-x86-64", "wixl": "wixl",
		"msiinfo": "msitools", "msibuild": "msitools", "msiextract": "msitools",
		"osslsigncode": "osslsigncode", "zip": "zip", "unzip": "unzip",
		"unshare": "util-linux", "sha256sum": "coreutils", "tar": "tar",
		"testssl": "testssl.sh",
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("needs %s (Debian package %s; .ci/run installs it)", tool, packages[tool])
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// svcNeedRoot skips (fails in CI) when not root.
func svcNeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "needs root (mount namespaces, running as another user)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// svcBuild builds cmd/postern for goos/amd64 into dir, stamped with version.
func svcBuild(t *testing.T, goos, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, "postern")
	if goos == "windows" {
		out += ".exe"
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", out, "./cmd/postern")
	cmd.Dir = svcRoot(t)
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build (%s): %v\n%s", goos, err, b)
	}
	return out
}

// svcRun runs a command with a deadline and returns its combined output.
func svcRun(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	// Output goes to a file, not a pipe: wine leaves wineserver and
	// services.exe running with the pipe's write end, and reading a pipe
	// would wait for them too.
	f, err := os.CreateTemp("", "svc-output-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: no answer within %s", name, strings.Join(args, " "), timeout)
	}
	out, rerr := os.ReadFile(f.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	return string(out), err
}

// svcMust is svcRun that fails the test on error.
func svcMust(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	out, err := svcRun(t, timeout, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// svcWaitFor polls cond every 100ms until it returns true or timeout passes;
// then it fails with the last detail cond gave.
func svcWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// svcEcho serves TCP echo on loopback until the test ends.
func svcEcho(t *testing.T) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	return ln.Addr().String()
}

// svcFreePort returns a loopback port that was free a moment ago. Only for
// an agent in another process (under wine) whose listen address the test
// must write into its config before it starts and cannot read back.
func svcFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// svcRoundTrip connects to addr, sends msg and expects it echoed.
func svcRoundTrip(addr, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return svcEchoOn(c, msg)
}

// svcEchoOn sends msg on c and reads it back.
func svcEchoOn(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(15 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// svcPKI is a throwaway CA with a server certificate for "hub.test" and a
// client certificate with CN "site-a", written as PEM files into dir.
type svcPKI struct {
	ServerCert, ServerKey, ClientCert, ClientKey, CA string
}

func svcCerts(t *testing.T, dir string) svcPKI {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := testca.New(t, "Postern Test CA")
	srv := ca.Issue(t, testca.Options{CN: "hub.test", DNS: []string{"hub.test"}}).Write(t, dir, "server", ca)
	cli := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "client", ca)
	return svcPKI{ServerCert: srv.Cert, ServerKey: srv.Key, ClientCert: cli.Cert, ClientKey: cli.Key, CA: srv.CA}
}

// svcHubConfig is a server-side agent offering "echo" to CN site-a.
func svcHubConfig(p svcPKI, listen, echo string) string {
	return fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"

[tls]
cert = %q
key  = %q
ca   = %q

[[server]]
listen = %q

[[service]]
name   = "echo"
target = %q
allow  = ["cn:site-a"]
`, p.ServerCert, p.ServerKey, p.CA, listen, echo)
}

// svcAgent is a postern process whose stderr the test reads.
type svcAgent struct {
	cmd  *exec.Cmd
	log  testnet.LogBuffer
	done chan struct{}
	err  error
}

// svcStart starts bin with args; the process is killed when the test ends.
func svcStart(t *testing.T, env []string, bin string, args ...string) *svcAgent {
	t.Helper()
	a := &svcAgent{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	a.cmd.Env = append(os.Environ(), env...)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stdout = io.Discard
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			io.WriteString(&a.log, sc.Text()+"\n")
		}
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("%s %s log:\n%s", filepath.Base(bin), strings.Join(args, " "), a.Log())
		}
	})
	return a
}

// Log returns what the process has written to stderr so far.
func (a *svcAgent) Log() string { return a.log.String() }

// exited reports whether the process has ended.
func (a *svcAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

var svcListeningRE = regexp.MustCompile(`msg="tunnel server listening" listen=(127\.0\.0\.1:\d+)`)

// svcServerAddr waits for the agent to log its tunnel listener's address.
func svcServerAddr(t *testing.T, a *svcAgent) string {
	t.Helper()
	var addr string
	svcWaitFor(t, 30*time.Second, "the tunnel server to listen", func() (bool, string) {
		if m := svcListeningRE.FindStringSubmatch(a.Log()); m != nil {
			addr = m[1]
			return true, ""
		}
		if a.exited() {
			t.Fatalf("agent exited: %v\n%s", a.err, a.Log())
		}
		return false, a.Log()
	})
	return addr
}
