//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testca"
)

// lineWaiter is a log destination a test can wait on.
type lineWaiter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	close(w.wake)
	w.wake = make(chan struct{})
	return len(p), nil
}

func (w *lineWaiter) waitFor(t *testing.T, part string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		text, wake := w.buf.String(), w.wake
		w.mu.Unlock()
		if strings.Contains(text, part) {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no log line with %q; log:\n%s", part, text)
		}
	}
}

// TestHangupReloads: SIGHUP makes a running agent read its certificate
// files again (reload_interval is an hour here, so only the signal can).
func TestHangupReloads(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	f := ca.Issue(t, testca.Options{CN: "hub"}).Write(t, dir, "hub", ca)
	path := filepath.Join(dir, "hub.toml")
	text := fmt.Sprintf("[tls]\ncert = %q\nkey = %q\nca = %q\nreload_interval = \"1h\"\n[[server]]\nlisten = \"127.0.0.1:0\"\n", f.Cert, f.Key, f.CA)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lineWaiter{wake: make(chan struct{})}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	stop := reloadOnHangup(a)
	defer stop()

	next := ca.Issue(t, testca.Options{CN: "hub"})
	testca.WriteFile(t, f.Cert, next.CertPEM)
	testca.WriteFile(t, f.Key, next.KeyPEM)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "reloaded certificate material: cert CN=\\\"hub\\\" serial "+next.Cert.SerialNumber.Text(16))
}
