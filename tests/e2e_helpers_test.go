package tests

// Helpers for the end-to-end tests (TestE2E...): build the postern binary
// once, write certificates and TOML files into a test's temporary folder,
// run agents as processes and read what they log. Everything here carries
// an e2e prefix so it cannot clash with other tests in this package, and
// nothing here needs a TestMain.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// e2eModule is the module whose cmd/postern the tests build.
const e2eModule = "github.com/postern-tunnel/postern"

var e2eBuild struct {
	once sync.Once
	path string
	err  error
}

// e2eBinary builds cmd/postern once per test binary run and returns its
// path. The first caller pays for the build.
func e2eBinary(t testing.TB) string {
	t.Helper()
	e2eBuild.once.Do(func() {
		e2eBuild.path, e2eBuild.err = e2eBuildBinary()
	})
	if e2eBuild.err != nil {
		t.Fatalf("build postern: %v", e2eBuild.err)
	}
	return e2eBuild.path
}

func e2eBuildBinary() (string, error) {
	root, err := e2eModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := e2eBinaryDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "postern")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/postern")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/postern in %s: %v\n%s", root, err, out)
	}
	return bin, nil
}

// e2eBinaryDir is where the built binary goes. `go test` runs the test
// binary from its own work folder (…/go-build*/b001/) and removes that
// folder when it is done, so the agent binary placed beside it is cleaned
// up with it, without a TestMain. A test binary run by hand gets a fresh
// temporary folder, which is left behind.
func e2eBinaryDir() (string, error) {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		if strings.HasPrefix(filepath.Base(filepath.Dir(dir)), "go-build") {
			return dir, nil
		}
	}
	return os.MkdirTemp("", "postern-e2e-")
}

// e2eModuleRoot walks up from the working folder to the go.mod of this
// module.
func e2eModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+e2eModule)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for %s above the working folder", e2eModule)
		}
		dir = parent
	}
}

// e2eAgent is a `postern run` process started for a test.
type e2eAgent struct {
	name string
	cmd  *exec.Cmd
	log  *testnet.LogBuffer // stdout and stderr together
	done chan struct{}      // closed when the process has exited and its output is read
}

// e2eStartAgent runs `postern run -c config`. The process is killed at the
// end of the test if it is still running; its output is shown if the test
// failed or with -v.
func e2eStartAgent(t testing.TB, name, config string) *e2eAgent {
	t.Helper()
	a := &e2eAgent{name: name, log: &testnet.LogBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(e2eBinary(t), "run", "-c", config)
	a.cmd.Stdout = a.log
	a.cmd.Stderr = a.log
	a.cmd.WaitDelay = 5 * time.Second
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer close(a.done)
		a.cmd.Wait()
	}()
	t.Cleanup(func() {
		if !a.exited() {
			a.cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("%s output:\n%s", name, a.log.String())
		}
	})
	return a
}

func (a *e2eAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (a *e2eAgent) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", a.name, sig, err)
	}
}

// waitExit waits for the process to end and returns its exit code (-1 when
// a signal killed it).
func (a *e2eAgent) waitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
		return a.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s; output:\n%s", a.name, timeout, a.log.String())
		return 0
	}
}

var e2eServerRE = regexp.MustCompile(`msg="tunnel server listening" listen=([^\s"]+)`)

// serverAddr is the address of the agent's (first) tunnel server, from the
// line the agent logs once it listens.
func (a *e2eAgent) serverAddr(t testing.TB) string {
	t.Helper()
	return a.log.WaitMatch(t, 10*time.Second, e2eServerRE)[1]
}

// forwardAddr is the address of the agent's forward to service.
func (a *e2eAgent) forwardAddr(t testing.TB, service string) string {
	t.Helper()
	re := regexp.MustCompile(`msg="forward listening" forward=([^\s"]+) via=\S+ service=` + regexp.QuoteMeta(service) + `(?:\s|$)`)
	return a.log.WaitMatch(t, 10*time.Second, re)[1]
}

// e2eCerts are a hub and a site certificate from one throwaway CA, on disk.
type e2eCerts struct {
	hub, site testca.Files
}

func e2eNewCerts(t testing.TB, dir string) *e2eCerts {
	t.Helper()
	ca := testca.New(t, "E2E Partners CA")
	hub := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	site := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}})
	return &e2eCerts{hub: hub.Write(t, dir, "hub", ca), site: site.Write(t, dir, "site", ca)}
}

// e2eHubTOML is a hub named "hub" whose tunnel server listens on listen
// and offers services (see e2eServiceTOML).
func e2eHubTOML(c *e2eCerts, listen string, services ...string) string {
	return fmt.Sprintf(`name = "hub"
shutdown_timeout = "5s"

[tls]
cert = %q
key = %q
ca = %q

[[server]]
listen = %q

%s`, c.hub.Cert, c.hub.Key, c.hub.CA, listen, strings.Join(services, "\n"))
}

// e2eServiceTOML is a [[service]] table.
func e2eServiceTOML(name, target string, allow ...string) string {
	q := make([]string, len(allow))
	for i, a := range allow {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("[[service]]\nname = %q\ntarget = %q\nallow = [%s]\n", name, target, strings.Join(q, ", "))
}

// e2eSiteTOML is a site named "site-a" that dials the hub at hubAddr
// (reconnecting quickly: backoff at most 500ms) and has one forward on an
// ephemeral loopback port per service.
func e2eSiteTOML(c *e2eCerts, hubAddr, shutdownTimeout string, services ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `name = "site-a"
shutdown_timeout = %q

[tls]
cert = %q
key = %q
ca = %q

[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"
`, shutdownTimeout, c.site.Cert, c.site.Key, c.site.CA, hubAddr)
	for _, s := range services {
		fmt.Fprintf(&b, "\n[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = %q\nvia = \"hub\"\ntunnel_wait = \"3s\"\n", s)
	}
	return b.String()
}

// e2eWriteConfig writes toml to NAME.toml in dir and returns its path.
func e2eWriteConfig(t testing.TB, dir, name, toml string) string {
	t.Helper()
	path := filepath.Join(dir, name+".toml")
	testca.WriteFile(t, path, []byte(toml))
	return path
}

// e2eServe runs handle for every connection to a new loopback listener
// until the test ends, and returns the listener's address.
func e2eServe(t testing.TB, handle func(c *net.TCPConn)) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, handle)
	return ln.Addr().String()
}

// e2eIsReset reports whether err is a TCP reset.
func e2eIsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}
