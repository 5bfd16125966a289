package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/config"
)

// unixListener is a forward's Unix socket. Its socket file exists, with
// its mode, from New until Close, which removes it.
type unixListener struct {
	net.Listener
	addr *net.UnixAddr
	file fs.FileInfo // the socket file as bound, so Close removes only that
	once sync.Once
}

// listenUnix binds a Unix socket at path with the given permission bits.
// The socket is bound inside a fresh folder only this user can enter,
// given its mode there, and then renamed into place: no other user can
// connect in between with the permissions the umask would give. A socket
// file left at path by an agent that did not stop cleanly is replaced;
// one that something still listens on, or a file that is not a socket, is
// an error.
func listenUnix(listen func(network, addr string) (net.Listener, error), path string, mode fs.FileMode) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Dir(path)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen unix %s: folder %s does not exist: create it (for a systemd service, RuntimeDirectory= creates one under /run)", path, filepath.Dir(path))
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".pt")
	if err != nil {
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	bindAt := tmp
	if len(tmp) > config.MaxUnixPath {
		// No room for the private folder: bind in place. The socket has the
		// umask's permissions until the chmod below.
		bindAt = path
	}
	ln, err := listen("unix", bindAt)
	if err != nil {
		return nil, err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // Close removes the file at its final path
	}
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(bindAt)
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if err := os.Chmod(bindAt, mode); err != nil {
		return fail(err)
	}
	if bindAt != path {
		if err := os.Rename(bindAt, path); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{Listener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}, file: fi}, nil
}

// Addr is the socket's path (not the private folder it was bound in, which
// the kernel goes on reporting as the socket's name: in the app's
// getpeername and the accepted connections' LocalAddr).
func (l *unixListener) Addr() net.Addr { return l.addr }

// Close stops listening and removes the socket file, unless another
// process has put its own file there since.
func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.addr.Name); serr == nil && os.SameFile(fi, l.file) {
			os.Remove(l.addr.Name)
		}
	})
	return err
}

// removeStale removes a socket file nothing listens on any more (left by
// an agent that was killed). Anything else at path stays, and is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen unix %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen unix %s: a file that is not a socket is in the way: remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: another process listens on this socket: stop it or choose another path", path)
	}
	if !connRefused(err) {
		return fmt.Errorf("listen unix %s: cannot tell whether the socket file there is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen unix %s: remove the stale socket file: %w", path, err)
	}
	return nil
}

// listenForward binds a forward's listen address: TCP, or a Unix socket
// with the forward's mode.
func (a *Agent) listenForward(fc config.Forward) (net.Listener, error) {
	if path, ok := fc.Listen.Unix(); ok {
		return listenUnix(a.opts.Listen, path, fs.FileMode(fc.UnixMode()))
	}
	return a.listenPlain("tcp", string(fc.Listen))
}

// ipPort is a's "ip:port" for an open request or a log, or "" when a is
// not an IP address (the unnamed end of a Unix socket connection).
func ipPort(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.String()
	}
	return ""
}
