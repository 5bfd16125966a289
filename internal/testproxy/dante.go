//go:build linux

package testproxy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Dante is Debian's dante-server (danted) running as a SOCKS5 proxy for a
// test.
type Dante struct {
	Addr string // 127.0.0.1:PORT
	proc *process
}

// StartDante starts danted on 127.0.0.1, allowing connections to
// 127.0.0.0/8. With username it requires username/password
// authentication against the system's accounts (see SystemUser).
func StartDante(t testing.TB, username bool) *Dante {
	t.Helper()
	bin := Need(t, "danted", "dante-server")
	d := dir(t, "postern-dante-")
	method := "none"
	if username {
		method = "username"
	}
	// danted cannot listen on port 0 nor inherit a socket: pick a free
	// port, and try again if something took it before danted bound it.
	for attempt := 0; attempt < 5; attempt++ {
		addr := freePort(t)
		_, port, _ := net.SplitHostPort(addr)
		var conf strings.Builder
		fmt.Fprintf(&conf, "logoutput: stderr\ninternal: 127.0.0.1 port = %s\nexternal: 127.0.0.1\nsocksmethod: %s\nclientmethod: none\n", port, method)
		if isRoot() {
			conf.WriteString("user.privileged: root\nuser.unprivileged: nobody\n")
		}
		conf.WriteString("client pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n}\nsocks pass {\n  from: 127.0.0.0/8 to: 127.0.0.0/8\n  command: connect\n}\n")
		path := filepath.Join(d, "danted.conf")
		if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startProcess(t, bin, "-f", path, "-N", "1", "-d", "1", "-p", filepath.Join(d, "danted.pid"))
		line := p.waitOutput(30*time.Second, "negotiate-child and ready to serve", "failed to bind internal addresses")
		switch {
		case strings.Contains(line, "ready to serve"):
			return &Dante{Addr: addr, proc: p}
		case strings.Contains(line, "failed to bind"):
			p.stop()
			continue
		}
		p.stop()
		t.Fatalf("danted did not start on %s:\n%s", addr, p.out.String())
	}
	t.Fatal("danted: no free port after 5 attempts")
	return nil
}

// Stop stops danted.
func (d *Dante) Stop() { d.proc.stop() }

// Log returns danted's output, for failure messages.
func (d *Dante) Log() string { return d.proc.out.String() }

// freePort returns a 127.0.0.1 address whose port was free a moment ago.
// Only for daemons that can neither listen on port 0 nor inherit a
// socket (see the package comment).
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
