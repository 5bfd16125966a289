//go:build unix

package tests

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// e2eHeldTransfer is a site and a hub with one forward to a service that
// answers "part one;" at once and the rest of its answer (1 MiB) only when
// the test calls release. The app's connection has its request sent and
// "part one;" read: a transfer in flight through the site.
type e2eHeldTransfer struct {
	hub, site *e2eAgent
	forward   string
	app       *net.TCPConn
	rest      []byte // what the service sends after release
	release   func()
}

const e2ePartOne = "part one;"

func e2eStartHeldTransfer(t *testing.T, siteShutdownTimeout string) *e2eHeldTransfer {
	t.Helper()
	e2eBinary(t)
	h := &e2eHeldTransfer{rest: make([]byte, 1<<20)}
	rand.Read(h.rest)
	released := make(chan struct{})
	var once sync.Once
	h.release = func() { once.Do(func() { close(released) }) }
	target := e2eServe(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c) // the request, up to the app's half-close
		c.Write([]byte(e2ePartOne))
		<-released
		c.Write(h.rest)
		c.CloseWrite()
	})
	t.Cleanup(h.release) // runs before e2eServe's cleanup waits for the handler

	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	h.hub = e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0",
		e2eServiceTOML("slow", target, "cn:site-a"))))
	hubAddr := h.hub.serverAddr(t)
	h.site = e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, siteShutdownTimeout, "slow")))
	h.forward = h.site.forwardAddr(t, "slow")
	h.site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	h.app = testnet.Dial(t, h.forward)
	h.app.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := h.app.Write([]byte("send me everything")); err != nil {
		t.Fatal(err)
	}
	h.app.CloseWrite()
	got := make([]byte, len(e2ePartOne))
	if _, err := io.ReadFull(h.app, got); err != nil || string(got) != e2ePartOne {
		t.Fatalf("start of the answer: %q, %v", got, err)
	}
	return h
}

// TestE2EDrain: on SIGTERM the site stops accepting on its forward at once,
// lets the transfer in flight finish (all of it, ending in a clean EOF,
// not a reset) once the service releases it, and then exits 0 without
// waiting for shutdown_timeout.
func TestE2EDrain(t *testing.T) {
	h := e2eStartHeldTransfer(t, "30s")
	h.site.signal(t, syscall.SIGTERM)
	h.site.log.WaitFor(t, 5*time.Second, "agent stopping: no new connections", "agent=site-a")

	if c, err := net.DialTimeout("tcp", h.forward, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("the forward accepted a new connection while draining")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("new connection while draining: %v, want connection refused", err)
	}
	if h.site.exited() {
		t.Fatalf("the site exited with a transfer in flight; output:\n%s", h.site.log.String())
	}

	h.release()
	released := time.Now()
	rest, err := io.ReadAll(h.app)
	if err != nil {
		t.Fatalf("in-flight transfer ended with %v after %d of %d bytes, want all of it and a clean end", err, len(rest), len(h.rest))
	}
	if !bytes.Equal(rest, h.rest) {
		t.Fatalf("in-flight transfer: got %d bytes, want the %d the service sent (equal: %v)", len(rest), len(h.rest), bytes.Equal(rest, h.rest))
	}
	if code := h.site.waitExit(t, 5*time.Second); code != 0 {
		t.Fatalf("site exited with %d after draining, want 0", code)
	}
	t.Logf("site exited %s after the transfer was released", time.Since(released).Round(time.Millisecond))
	h.site.log.WaitFor(t, time.Second, "agent stopped", "agent=site-a")
	if out := h.site.log.String(); bytes.Contains([]byte(out), []byte("shutdown_timeout")) {
		t.Errorf("the drain hit shutdown_timeout:\n%s", out)
	}
}

// TestE2EDrainSecondSignal: a second SIGTERM during the drain exits at
// once, non-zero, saying so.
func TestE2EDrainSecondSignal(t *testing.T) {
	h := e2eStartHeldTransfer(t, "30s")
	h.site.signal(t, syscall.SIGTERM)
	h.site.log.WaitFor(t, 5*time.Second, "agent stopping: no new connections", "agent=site-a")
	if h.site.exited() {
		t.Fatalf("the site exited with a transfer in flight; output:\n%s", h.site.log.String())
	}
	second := time.Now()
	h.site.signal(t, syscall.SIGTERM)
	code := h.site.waitExit(t, 2*time.Second)
	if code == 0 || code == -1 {
		t.Fatalf("site exited with %d after a second SIGTERM, want a non-zero exit status", code)
	}
	t.Logf("site exited with %d %s after the second SIGTERM", code, time.Since(second).Round(time.Millisecond))
	h.site.log.WaitFor(t, time.Second, "second signal: exiting now without draining")
	// The cut stream says it was the second signal, not a deadline.
	h.site.log.WaitFor(t, time.Second, "stream reset", "transfer cut by a second stop signal")
	if strings.Contains(h.site.log.String(), "shutdown deadline") {
		t.Errorf("the site blamed a shutdown deadline no one reached:\n%s", h.site.log.String())
	}

	// The cut transfer must look cut: the agent resets the app's
	// connection before it exits, so the app never reads a clean EOF
	// after a partial answer.
	if err := testnet.Drain(h.app); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the app's in-flight read ended with %v, want connection reset", err)
	}
}

// e2eUpload is a transfer in flight in both directions through a site and
// a hub: the app has read the target's first bytes and keeps uploading; the
// target reads the upload until it ends and reports how (targetEnd).
type e2eUpload struct {
	hub, site *e2eAgent
	app       *net.TCPConn
	targetEnd chan error
	appEnd    chan error // the first error the application's reads or writes returned
}

func e2eStartUpload(t *testing.T, siteShutdownTimeout string) *e2eUpload {
	t.Helper()
	e2eBinary(t)
	u := &e2eUpload{targetEnd: make(chan error, 1), appEnd: make(chan error, 1)}
	target := e2eServe(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		c.Write([]byte(e2ePartOne))
		u.targetEnd <- testnet.Drain(c)
	})
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	u.hub = e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0",
		e2eServiceTOML("upload", target, "cn:site-a"))))
	hubAddr := u.hub.serverAddr(t)
	u.site = e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, siteShutdownTimeout, "upload")))
	forward := u.site.forwardAddr(t, "upload")
	u.site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	u.app = testnet.Dial(t, forward)
	u.app.SetDeadline(time.Now().Add(60 * time.Second))
	got := make([]byte, len(e2ePartOne))
	if _, err := io.ReadFull(u.app, got); err != nil || string(got) != e2ePartOne {
		t.Fatalf("start of the answer: %q, %v", got, err)
	}
	// An upload that outlasts the drain, and a read between chunks, on one
	// goroutine: the kernel reports a reset to one call only (the socket's
	// pending error is cleared when returned), so a reader and a writer on
	// two goroutines could each miss it. In order, the first call after a
	// reset fails with ECONNRESET, while after a FIN a read returns
	// end-of-stream (and writes still succeed).
	go func() {
		chunk := make([]byte, 16<<10)
		buf := make([]byte, 4<<10)
		for {
			if _, err := u.app.Write(chunk); err != nil {
				u.appEnd <- err
				return
			}
			u.app.SetReadDeadline(time.Now().Add(10 * time.Millisecond)) // pacing, not synchronisation: keeps the transfer going
			if _, err := u.app.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				u.appEnd <- err
				return
			}
		}
	}()
	return u
}

// wantResets asserts that both ends of the transfer see a reset.
func (u *e2eUpload) wantResets(t *testing.T, when string) {
	t.Helper()
	select {
	case err := <-u.appEnd:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the application's transfer ended with %v %s, want connection reset", err, when)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the application saw no end of the transfer %s", when)
	}
	select {
	case err := <-u.targetEnd:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the target's transfer ended with %v %s, want connection reset", err, when)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the target saw no end of the transfer %s", when)
	}
}

// TestE2EDrainDeadline: a transfer still running when shutdown_timeout
// expires is cut, and both of its ends see a reset, never a clean end: the
// application (behind the stopping site) and the target (behind the hub).
func TestE2EDrainDeadline(t *testing.T) {
	u := e2eStartUpload(t, "1s")
	u.site.signal(t, syscall.SIGTERM)
	u.site.log.WaitFor(t, 5*time.Second, "shutdown_timeout", "reached")
	u.wantResets(t, "at the drain deadline")
	if code := u.site.waitExit(t, 10*time.Second); code != 0 {
		t.Errorf("site exited with %d after its drain deadline, want 0", code)
	}
}

// TestE2EDrainKilled: a service manager whose stop timeout runs out kills
// the draining agent (systemd's SIGKILL after TimeoutStopSec; Windows ends
// a service that overran its stop budget). The transfers still in flight
// must end in resets, not in the FIN of the kernel's close at exit.
func TestE2EDrainKilled(t *testing.T) {
	u := e2eStartUpload(t, "60s")
	u.site.signal(t, syscall.SIGTERM)
	u.site.log.WaitFor(t, 5*time.Second, "agent stopping: no new connections", "agent=site-a")
	if u.site.exited() {
		t.Fatalf("the site exited with a transfer in flight; output:\n%s", u.site.log.String())
	}
	if err := u.site.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	u.site.waitExit(t, 5*time.Second)
	u.wantResets(t, "when the draining agent was killed")
}
