// Package testproxy runs real proxies for tests on 127.0.0.1: Debian's
// squid as an HTTP CONNECT proxy and dante-server as a SOCKS5 proxy.
//
// A test that needs one fails when the environment variable CI is "true"
// and the program is missing (CI installs them), and is skipped with the
// reason otherwise.
//
// Ports: squid cannot listen on port 0 and cannot inherit a socket, but
// with worker-queues it binds with SO_REUSEPORT; so the test holds a
// SO_REUSEPORT listener on 127.0.0.1:0, squid binds the same port beside
// it, and the test closes its own once squid is accepting. The port is
// never free in between. Dante has neither: its port is the one
// unavoidable case of picking a free port and starting the daemon on it,
// retried when the daemon reports the port taken.
//
//go:build linux

package testproxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Need returns the path of program, or ends the test: a failure under
// CI=true, a skip with the reason elsewhere.
func Need(t testing.TB, program, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, program); isExec(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: install Debian's %s (apt-get install -y --no-install-recommends %s)", program, pkg, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// dir makes a folder that the proxies' unprivileged users can read and
// write, removed when the test ends.
func dir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

// process is a daemon started by a test, in its own process group so
// that stopping it also stops its helpers and children.
type process struct {
	cmd  *exec.Cmd
	out  *output
	done chan struct{}
	once sync.Once
}

func startProcess(t testing.TB, name string, args ...string) *process {
	t.Helper()
	p := &process{out: &output{}, done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the process group: SIGTERM, then SIGKILL after 5s.
func (p *process) stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// Helpers that outlived the leader.
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitOutput waits until the output has a line with any of lines, the
// process exits, or timeout passes; it returns the line found, or "".
func (p *process) waitOutput(timeout time.Duration, lines ...string) string {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		changed := p.out.changed()
		for _, l := range strings.Split(p.out.String(), "\n") {
			for _, want := range lines {
				if strings.Contains(l, want) {
					return l
				}
			}
		}
		select {
		case <-changed:
		case <-p.done:
			// One last look at what it wrote before exiting.
			select {
			case <-changed:
				continue
			default:
				return ""
			}
		case <-deadline.C:
			return ""
		}
	}
}

// isRoot reports whether the test runs as root, where the daemons switch
// to unprivileged users.
func isRoot() bool { return os.Geteuid() == 0 }

// SystemUser creates a system account name with password for the test
// and removes it afterwards; dante's username method checks the system's
// password database. Only under CI=true (a throwaway machine) and as
// root; elsewhere the test is skipped with the reason.
func SystemUser(t testing.TB, name, password string) {
	t.Helper()
	if os.Getenv("CI") != "true" {
		t.Skipf("creating the system account %q that dante checks passwords against: only under CI=true", name)
	}
	if !isRoot() {
		t.Fatalf("creating the system account %q needs root", name)
	}
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command(Need(t, "useradd", "passwd"), "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", name).Run() })
	}
	cmd := exec.Command(Need(t, "chpasswd", "passwd"))
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd %s: %v: %s", name, err, out)
	}
}

// listenReusePort opens a listener on 127.0.0.1:0 that another socket
// with SO_REUSEPORT may bind beside.
func listenReusePort() (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
}

// output collects a process's stdout and stderr.
type output struct {
	mu   sync.Mutex
	buf  strings.Builder
	wake chan struct{} // closed and replaced on every write
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if o.wake != nil {
		close(o.wake)
		o.wake = nil
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// changed returns a channel closed at the next write.
func (o *output) changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.wake == nil {
		o.wake = make(chan struct{})
	}
	return o.wake
}
