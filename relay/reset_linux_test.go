package relay

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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
