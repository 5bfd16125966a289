package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// UnixPrefix starts an address that is a Unix domain socket path rather
// than a host:port: a [[forward]]'s listen or a [[service]]'s target,
// for local applications that speak through a socket file.
const UnixPrefix = "unix:"

// MaxUnixPath is the longest socket path every supported system takes
// (sockaddr_un holds 104 bytes on macOS and the BSDs, 108 on Linux, with
// the terminating NUL).
const MaxUnixPath = 103

// DefaultUnixMode is the permission of a forward's socket file: the
// agent's user and group may connect, nobody else.
const DefaultUnixMode = 0o660

// Unix returns the socket path of a "unix:PATH" address.
func (a Address) Unix() (path string, ok bool) {
	return strings.CutPrefix(string(a), UnixPrefix)
}

// Network is the address's network for net.Listen and net.Dial: "unix"
// or "tcp".
func (a Address) Network() string {
	if _, ok := a.Unix(); ok {
		return "unix"
	}
	return "tcp"
}

// NetAddr is the address as net.Listen and net.Dial take it: the socket
// path of a Unix address, host:port otherwise.
func (a Address) NetAddr() string {
	if p, ok := a.Unix(); ok {
		return p
	}
	return string(a)
}

// checkUnix checks the path of a "unix:" address as written (relative
// paths are resolved against the config's folder later).
func checkUnix(s string) error {
	p, _ := strings.CutPrefix(s, UnixPrefix)
	switch {
	case p == "":
		return fmt.Errorf("%q: no socket path after %q, like \"unix:/run/postern/app.sock\"", s, UnixPrefix)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%q: the socket path holds a NUL byte", s)
	}
	return nil
}

// resolveUnix makes a relative "unix:" address absolute against dir.
func resolveUnix(a *Address, dir string) {
	if p, ok := a.Unix(); ok && p != "" && !filepath.IsAbs(p) {
		*a = Address(UnixPrefix + filepath.Join(dir, p))
	}
}

// checkUnixLength refuses a resolved socket path the system cannot bind.
func checkUnixLength(a Address) error {
	if p, ok := a.Unix(); ok && len(p) > MaxUnixPath {
		return fmt.Errorf("socket path %q is %d bytes; sockets take at most %d: use a shorter path (like /run/postern/NAME.sock)", p, len(p), MaxUnixPath)
	}
	return nil
}

// notUnix refuses a "unix:" address where only TCP makes sense.
func notUnix(a Address, what string) error {
	if _, ok := a.Unix(); ok {
		return fmt.Errorf("%q: %s is a TCP host:port; Unix sockets are for a [[forward]]'s listen and a [[service]]'s target", string(a), what)
	}
	return nil
}

// UnixMode is the permission of a forward's socket file: mode as written
// ("0660"), or DefaultUnixMode.
func (f *Forward) UnixMode() uint32 {
	if f.Mode == "" {
		return DefaultUnixMode
	}
	m, _ := strconv.ParseUint(f.Mode, 8, 32)
	return uint32(m)
}

// checkMode checks a forward's mode: octal permission bits, only for a
// Unix socket.
func checkMode(f *Forward) error {
	if f.Mode == "" {
		return nil
	}
	if _, ok := f.Listen.Unix(); !ok {
		return fmt.Errorf("mode %q: only a Unix socket (listen = \"unix:PATH\") has a mode", f.Mode)
	}
	m, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return fmt.Errorf("mode %q: write the socket's permission bits in octal, like \"0660\"", f.Mode)
	}
	if m&0o600 != 0o600 {
		return fmt.Errorf("mode %q: the owner needs read and write (0600) to use the socket", f.Mode)
	}
	return nil
}
