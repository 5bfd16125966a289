//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// serveUnix runs handle for each connection to a Unix socket at path
// until the test ends.
func serveUnix(t *testing.T, path string, handle func(c *net.UnixConn)) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeConns(t, ln, handle)
}

// answerAfterEOF reads the whole request to end-of-stream and only then
// sends it back: its answer arrives only if the app's half-close did, and
// only while the app's receiving direction stays open.
func answerAfterEOF(c interface {
	io.ReadWriter
	CloseWrite() error
}) {
	req, err := io.ReadAll(c)
	if err != nil {
		return
	}
	c.Write(req)
	c.CloseWrite()
}

// unixPairTOML is a hub serving service "app" at target and a site with a
// forward listening at listen (with mode, when set) to it.
func unixPair(t *testing.T, dir, target, listen, mode string, extraHub string) (hub, site *running) {
	t.Helper()
	p := newPKI(t, dir)
	small := "[tunnel]\nopen_timeout = \"60s\"\nstream_window = \"256KiB\"\n"
	hub = start(t, dir, "hub", strings.Replace(hubTOML(p, serviceTOML("app", target, "cn:site-a")+extraHub),
		"[tunnel]\nopen_timeout = \"60s\" # loaded CI machines run -race tests side by side\n", small, 1))
	s := strings.Replace(siteTOML(p, hub.ServerAddrs()[0].String()), "[tunnel]\nopen_timeout = \"60s\"\n", small, 1)
	s += fmt.Sprintf("[[forward]]\nlisten = %q\nservice = \"app\"\nvia = \"hub\"\n", listen)
	if mode != "" {
		s += fmt.Sprintf("mode = %q\n", mode)
	}
	site = start(t, dir, "site", s)
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	return hub, site
}

// TestUnixSockets: a forward listens on a Unix socket (a relative path,
// against the config's folder, with the default mode 0660) and the hub's
// service targets a Unix socket; bytes go both ways, checked by SHA-256,
// and the app's half-close reaches the target while the answer still
// flows back. The socket file is gone when the agent stops.
func TestUnixSockets(t *testing.T) {
	dir := t.TempDir()
	appSock := filepath.Join(dir, "app.sock")
	serveUnix(t, appSock, func(c *net.UnixConn) { answerAfterEOF(c) })
	hub, site := unixPair(t, dir, "unix:app.sock", "unix:fwd.sock", "", "")
	fwd := filepath.Join(dir, "fwd.sock")
	if got := site.ForwardAddrs()[0].String(); got != fwd {
		t.Fatalf("forward address %s, want %s (the relative path resolved against the config folder)", got, fwd)
	}
	fi, err := os.Lstat(fwd)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("forward socket %s: %v, %v; want a socket with mode 0660", fwd, fi.Mode(), err)
	}
	site.log.WaitFor(t, 5*time.Second, "forward listening", "forward="+fwd)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".pt") {
			t.Errorf("private bind folder %s left behind", e.Name())
		}
	}

	for _, size := range []int{0, 1, 3 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { checkedEcho(t, "unix", fwd, size) })
	}
	// The hub logs the unix target; the open request carried no address
	// for the app, whose end of a Unix socket has none.
	line := hub.log.WaitFor(t, 10*time.Second, "stream connected to its target", "target=unix:"+appSock)
	if strings.Contains(line, "client=") {
		t.Errorf("hub log names a client address for a Unix socket app: %s", line)
	}

	site.stop(t)
	if _, err := os.Lstat(fwd); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file after stop: %v, want it removed", err)
	}
	hub.stop(t)
}

// TestUnixSocketMode: mode sets the socket file's permissions.
func TestUnixSocketMode(t *testing.T) {
	dir := t.TempDir()
	serveUnix(t, filepath.Join(dir, "app.sock"), func(c *net.UnixConn) { answerAfterEOF(c) })
	_, site := unixPair(t, dir, "unix:"+filepath.Join(dir, "app.sock"), "unix:"+filepath.Join(dir, "f.sock"), "0600", "")
	fi, err := os.Lstat(site.ForwardAddrs()[0].String())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("forward socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	checkedEcho(t, "unix", site.ForwardAddrs()[0].String(), 1000)
}

// fillUntilBlocked writes to c until a write cannot finish within 200ms:
// every buffer between c and the stalled far end is full, so the relay has
// stopped reading c and bytes of c's are queued unread at the relay's end.
func fillUntilBlocked(c net.Conn) error {
	chunk := make([]byte, 64<<10)
	deadline := time.Now().Add(30 * time.Second)
	for total := 0; ; total += len(chunk) {
		if time.Now().After(deadline) || total > 512<<20 {
			return fmt.Errorf("writes never blocked after %d bytes", total)
		}
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(chunk); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.SetWriteDeadline(time.Time{})
				return nil
			}
			return fmt.Errorf("write after %d bytes: %w", total, err)
		}
	}
}

// keepWriting writes to c until a write fails, keeping the relay's
// unread queue full, and returns the error.
func keepWriting(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// appSawReset checks what an app that reads and writes at once saw of a
// cut made while its bytes waited unread at the relay: the kernel reports
// ECONNRESET once, to whichever call comes first, and the other call then
// sees end-of-stream (a read) or EPIPE (a write).
func appSawReset(readErr, writeErr error) error {
	if !errors.Is(readErr, syscall.ECONNRESET) && !errors.Is(writeErr, syscall.ECONNRESET) {
		return fmt.Errorf("read ended with %v, write with %v; want ECONNRESET on one of them", readErr, writeErr)
	}
	return appSawCut(readErr, writeErr)
}

// appSawCut checks the least an app sees of any cut: its write fails, and
// its read ends with ECONNRESET or, when the relay had read all it sent,
// end-of-stream.
func appSawCut(readErr, writeErr error) error {
	if !errors.Is(writeErr, syscall.ECONNRESET) && !errors.Is(writeErr, syscall.EPIPE) {
		return fmt.Errorf("write ended with %v, want ECONNRESET or EPIPE", writeErr)
	}
	if readErr != nil && !errors.Is(readErr, syscall.ECONNRESET) {
		return fmt.Errorf("read ended with %v, want ECONNRESET or end-of-stream", readErr)
	}
	return nil
}

// TestUnixSocketCut: a transfer cut in the middle reaches an app on a Unix
// socket as an error, on the forward's side and on the target's. A Unix
// socket has no reset (relay.ResetConn says what the app sees): when this
// agent cuts while the app's bytes wait unread (a second stop signal, with
// the tunnel full), the app gets ECONNRESET. When the far end cuts, the
// relay may read what was queued before the cut reaches it; the app's
// writes still fail.
func TestUnixSocketCut(t *testing.T) {
	for _, byPeer := range []bool{false, true} {
		who := map[bool]string{false: "by this agent", true: "by the far end"}[byPeer]
		check := map[bool]func(error, error) error{false: appSawReset, true: appSawCut}[byPeer]
		t.Run("forward "+who, func(t *testing.T) {
			// The app uploads to a TCP target that reads nothing.
			dir := t.TempDir()
			cut := make(chan struct{})
			ln := testnet.Listen(t)
			testnet.Serve(t, ln, func(c *net.TCPConn) {
				<-cut
				c.SetLinger(0)
				c.Close()
			})
			cutTarget := sync.OnceFunc(func() { close(cut) })
			t.Cleanup(cutTarget)
			_, site := unixPair(t, dir, ln.Addr().String(), "unix:fwd.sock", "", "")
			c, err := net.Dial("unix", site.ForwardAddrs()[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := fillUntilBlocked(c); err != nil {
				t.Fatal(err)
			}
			// Writing on keeps bytes queued at the relay when the cut comes.
			wrote := keepWriting(c)
			if byPeer {
				cutTarget()
			} else {
				site.Abort()
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, rerr := io.Copy(io.Discard, c)
			if err := check(rerr, <-wrote); err != nil {
				t.Fatalf("app on the forward's socket: %v", err)
			}
			site.log.WaitFor(t, 10*time.Second, "stream reset", "forward=")
		})
		t.Run("service target "+who, func(t *testing.T) {
			// The app behind the service downloads into a TCP client that
			// reads nothing.
			dir := t.TempDir()
			appSock := filepath.Join(dir, "app.sock")
			blocked, got := make(chan error, 1), make(chan error, 1)
			serveUnix(t, appSock, func(c *net.UnixConn) {
				err := fillUntilBlocked(c)
				blocked <- err
				if err != nil {
					return
				}
				wrote := keepWriting(c)
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, rerr := io.Copy(io.Discard, c)
				got <- check(rerr, <-wrote)
			})
			hub, site := unixPair(t, dir, "unix:"+appSock, "127.0.0.1:0", "", "")
			c := testnet.Dial(t, site.ForwardAddrs()[0].String())
			c.Write([]byte("start"))
			select {
			case err := <-blocked:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the app behind the service never connected")
			}
			if byPeer {
				c.SetLinger(0)
				c.Close()
			} else {
				hub.Abort()
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("app behind the service: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the app behind the service never saw the cut")
			}
		})
	}
}

// TestListenUnixStale: a socket file nothing listens on (an agent was
// killed) is replaced; a live socket or a file that is not a socket stops
// the start with a message that says what to do; Close removes only the
// agent's own socket file.
func TestListenUnixStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")

	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := listenUnix(net.Listen, path, 0o660)
	if err != nil {
		t.Fatalf("over a stale socket file: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()

	// A second agent on the same path finds the first one listening.
	if _, err := listenUnix(net.Listen, path, 0o660); err == nil || !strings.Contains(err.Error(), "another process listens on this socket") {
		t.Fatalf("over a live socket: %v, want \"another process listens on this socket\"", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Close: %v, want the socket file removed", err)
	}

	// A regular file is never removed.
	os.WriteFile(path, []byte("data"), 0o600)
	if _, err := listenUnix(net.Listen, path, 0o660); err == nil || !strings.Contains(err.Error(), "not a socket is in the way") {
		t.Fatalf("over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Fatalf("the regular file was touched: %q", b)
	}
	os.Remove(path)

	// Close leaves a file someone else put at the path since.
	ln, err = listenUnix(net.Listen, path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	os.WriteFile(path, []byte("other"), 0o600)
	ln.Close()
	if b, _ := os.ReadFile(path); string(b) != "other" {
		t.Fatalf("Close removed a file that was not its socket: %q", b)
	}
}

// TestUnixSocketAgentErrors: an agent whose forward cannot bind its socket
// fails at start, naming the config line and the path.
func TestUnixSocketAgentErrors(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	toml := siteTOML(p, "127.0.0.1:1") + "[[forward]]\nlisten = \"unix:missing/fwd.sock\"\nservice = \"app\"\nvia = \"hub\"\n"
	path := filepath.Join(dir, "site.toml")
	os.WriteFile(path, []byte(toml), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	want := filepath.Join(dir, "missing", "fwd.sock")
	if err == nil || !strings.Contains(err.Error(), "forward unix:"+want) || !strings.Contains(err.Error(), "folder "+filepath.Dir(want)+" does not exist") {
		t.Fatalf("New: %v, want the forward's path and \"folder ... does not exist\"", err)
	}
}

// TestUnixSocketPROXYHeader: a connection from an app on a Unix socket has
// no address; a v2 PROXY header says LOCAL (use the connection's own
// addresses) and still carries who the verified peer is; v1 says UNKNOWN.
func TestUnixSocketPROXYHeader(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			dir := t.TempDir()
			raw := testnet.Listen(t)
			pl := &proxyproto.Listener{Listener: raw}
			headers := make(chan *proxyproto.Header, 1)
			go func() {
				c, err := pl.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				headers <- c.(*proxyproto.Conn).ProxyHeader()
				io.Copy(c, c)
			}()
			_, site := unixPair(t, dir, raw.Addr().String(), "unix:fwd.sock", "", "proxy_protocol = \""+version+"\"\n")
			checkedEcho(t, "unix", site.ForwardAddrs()[0].String(), 1000)
			var h *proxyproto.Header
			select {
			case h = <-headers:
			case <-time.After(30 * time.Second):
				t.Fatal("no connection at the target")
			}
			if h == nil || h.Command != proxyproto.LOCAL || h.TransportProtocol != proxyproto.UNSPEC {
				t.Fatalf("PROXY header %+v, want LOCAL with no addresses", h)
			}
			tlvs, _ := h.TLVs()
			found := false
			for _, tlv := range tlvs {
				found = found || tlv.Type == TLVPeerIdentities && strings.Contains(string(tlv.Value), "cn:site-a")
			}
			if version == "v2" && !found {
				t.Fatalf("v2 header TLVs %v lack the peer's identities", tlvs)
			}
		})
	}
}
