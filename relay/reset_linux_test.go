package relay

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unixPair is a connected pair of Unix stream sockets: the app's end and
// the relay's.
func unixPair(t *testing.T) (app, relayEnd net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	relayEnd, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(); relayEnd.Close() })
	return app, relayEnd
}

// TestResetConnUnix pins what ResetConn's comment promises for a Unix
// socket on Linux: the app reads what was delivered, then ECONNRESET if it
// had sent bytes the relay had not read; otherwise end-of-stream, and its
// next write fails with EPIPE.
func TestResetConnUnix(t *testing.T) {
	t.Run("app had sent unread bytes", func(t *testing.T) {
		app, r := unixPair(t)
		app.Write([]byte("unread upload"))
		r.Write([]byte("delivered"))
		ResetConn(r)
		app.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(app)
		if string(got) != "delivered" || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("app read %q, %v; want \"delivered\" then ECONNRESET", got, err)
		}
	})
	t.Run("nothing unread", func(t *testing.T) {
		app, r := unixPair(t)
		r.Write([]byte("delivered"))
		ResetConn(r)
		app.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(app)
		if string(got) != "delivered" || err != nil {
			t.Fatalf("app read %q, %v; want \"delivered\" then end-of-stream", got, err)
		}
		if _, err := app.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("app write after the cut: %v, want EPIPE", err)
		}
	})
}

// TestEndedByResetReadsShutAfterState: the plaintext side half-closes, the
// relay reads its end, and just then (between that read and the look at
// the socket's state) the other direction sends this side's FIN and the
// application acknowledges it, which leaves the socket in CLOSE, as a reset
// would. Both directions ended cleanly; endedByReset must see the FIN it
// was told about, not a reset.
func TestEndedByResetReadsShutAfterState(t *testing.T) {
	app, plain := tcpPair(t)
	app.CloseWrite()
	plain.SetReadDeadline(time.Now().Add(testWait))
	if n, err := plain.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("relay's read of the half-closed side: %d, %v; want end-of-stream", n, err)
	}
	var shut atomic.Bool
	testHookBeforeState = func() {
		shut.Store(true) // as the receive direction does, before its FIN
		plain.CloseWrite()
		deadline := time.Now().Add(testWait)
		for tcpState(t, plain) != tcpClose { // the application's kernel acknowledges the FIN
			if time.Now().After(deadline) {
				t.Errorf("socket state %d, never CLOSE after both FINs", tcpState(t, plain))
				return
			}
			runtime.Gosched()
		}
	}
	defer func() { testHookBeforeState = nil }()
	if endedByReset(plain, &shut) {
		t.Fatal("a clean end in both directions was taken for a reset")
	}
}

func tcpState(t *testing.T, c *net.TCPConn) uint8 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st uint8
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			st = info.State
		}
	})
	return st
}
