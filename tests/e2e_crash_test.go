//go:build unix

package tests

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2ECrashForwardSide: kill -9 of the site (the agent the application
// connects to) during a download. The kernel closes a dead process's
// sockets; the application must read a reset, not a clean end after a
// partial answer.
func TestE2ECrashForwardSide(t *testing.T) {
	h := e2eStartHeldTransfer(t, "30s")
	if err := h.site.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.site.waitExit(t, 5*time.Second)
	if err := testnet.Drain(h.app); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the application's download ended with %v when the site was killed, want connection reset", err)
	}
}

// TestE2ECrashServiceSide: kill -9 of the hub (the agent that dialed the
// target) during an upload. The target must read a reset, not a clean end
// of a partial upload.
func TestE2ECrashServiceSide(t *testing.T) {
	e2eBinary(t)
	const enough = 1 << 20
	type ended struct {
		n   int64
		err error
	}
	midway := make(chan struct{})
	endc := make(chan ended, 1)
	target := e2eServe(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := io.CopyN(io.Discard, c, enough)
		if err == nil {
			close(midway)
			var m int64
			m, err = io.Copy(io.Discard, c)
			n += m
		}
		if err == nil {
			err = io.EOF
		}
		endc <- ended{n, err}
	})
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0",
		e2eServiceTOML("upload", target, "cn:site-a"))))
	hubAddr := hub.serverAddr(t)
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, "5s", "upload")))
	forward := site.forwardAddr(t, "upload")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	app := testnet.Dial(t, forward)
	app.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := app.Write(chunk); err != nil {
				return
			}
		}
	}()
	select {
	case <-midway:
	case e := <-endc:
		t.Fatalf("the upload ended after %d bytes with %v before the hub was killed", e.n, e.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the upload did not reach the target")
	}
	if err := hub.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-endc:
		if !errors.Is(e.err, syscall.ECONNRESET) {
			t.Fatalf("the target's upload ended after %d bytes with %v when the hub was killed, want connection reset", e.n, e.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the target saw no end of the upload after the hub was killed")
	}
}
