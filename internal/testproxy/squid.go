//go:build linux

package testproxy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SquidOptions configure a test squid.
type SquidOptions struct {
	// Users, when set, turns on Basic authentication with these names and
	// passwords (an htpasswd file read by basic_ncsa_auth).
	Users map[string]string
	// DenyPorts are destination ports squid refuses to CONNECT to (403).
	DenyPorts []int
}

// Squid is Debian's squid running as an HTTP CONNECT proxy for a test.
type Squid struct {
	Addr string // 127.0.0.1:PORT
	Dir  string // its config and logs
	proc *process
}

// StartSquid starts squid on 127.0.0.1 and waits until it accepts
// connections; it stops when the test ends.
func StartSquid(t testing.TB, opts SquidOptions) *Squid {
	t.Helper()
	bin := Need(t, "squid", "squid")
	d := dir(t, "postern-squid-")
	// Hold the port with SO_REUSEPORT until squid has bound it too (see
	// the package comment).
	hold, err := listenReusePort()
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	addr := hold.Addr().String()
	var conf strings.Builder
	fmt.Fprintf(&conf, "http_port %s worker-queues\n", addr)
	if isRoot() {
		conf.WriteString("cache_effective_user proxy\n")
	}
	fmt.Fprintf(&conf, `pid_filename none
cache_log %[1]s/cache.log
access_log stdio:%[1]s/access.log
coredump_dir %[1]s
cache deny all
cache_mem 4 MB
pinger_enable off
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
acl CONNECT method CONNECT
`, d)
	for _, port := range opts.DenyPorts {
		fmt.Fprintf(&conf, "acl denied_%[1]d port %[1]d\nhttp_access deny CONNECT denied_%[1]d\n", port)
	}
	switch {
	case opts.Users != nil:
		htpasswd := filepath.Join(d, "htpasswd")
		writeHtpasswd(t, htpasswd, opts.Users)
		fmt.Fprintf(&conf, "auth_param basic program /usr/lib/squid/basic_ncsa_auth %s\nauth_param basic children 2\nauth_param basic realm postern-test\nacl authed proxy_auth REQUIRED\nhttp_access allow authed\n", htpasswd)
	default:
		conf.WriteString("acl local src 127.0.0.0/8\nhttp_access allow local\n")
	}
	conf.WriteString("http_access deny all\n")
	path := filepath.Join(d, "squid.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Squid{Addr: addr, Dir: d}
	s.proc = startProcess(t, bin, "-N", "-f", path, "-d", "1")
	if s.proc.waitOutput(30*time.Second, "Accepting HTTP Socket connections") == "" {
		s.proc.stop()
		t.Fatalf("squid did not start on %s:\n%s", addr, s.proc.out.String())
	}
	// Hand the port over, then make sure squid alone answers on it.
	hold.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) || s.proc.exited() {
			s.proc.stop()
			t.Fatalf("squid does not accept on %s: %v\n%s", addr, err, s.proc.out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	return s
}

// Stop stops squid; its port then refuses connections.
func (s *Squid) Stop() { s.proc.stop() }

// Log returns squid's output and access log, for failure messages.
func (s *Squid) Log() string {
	access, _ := os.ReadFile(filepath.Join(s.Dir, "access.log"))
	return s.proc.out.String() + "\naccess.log:\n" + string(access)
}

// writeHtpasswd writes users in the APR1-MD5 htpasswd format that
// basic_ncsa_auth reads, hashed by openssl.
func writeHtpasswd(t testing.TB, path string, users map[string]string) {
	t.Helper()
	openssl := Need(t, "openssl", "openssl")
	var b strings.Builder
	for name, password := range users {
		out, err := exec.Command(openssl, "passwd", "-apr1", password).Output()
		if err != nil {
			t.Fatalf("openssl passwd: %v", err)
		}
		fmt.Fprintf(&b, "%s:%s\n", name, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Port returns the port of addr as a number.
func Port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}
