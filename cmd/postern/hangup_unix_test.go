//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestHangupReloads: SIGHUP makes a running agent read its certificate
// files again (reload_interval is an hour here, so only the signal can).
func TestHangupReloads(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	f := ca.Issue(t, testca.Options{CN: "hub"}).Write(t, dir, "hub", ca)
	text := fmt.Sprintf("[tls]\ncert = %q\nkey = %q\nca = %q\nreload_interval = \"1h\"\n[[server]]\nlisten = \"127.0.0.1:0\"\n", f.Cert, f.Key, f.CA)
	var logs testnet.LogBuffer
	a := startAgent(t, dir, text, &logs)
	stop := reloadOnHangup(a)
	defer stop()

	next := ca.Issue(t, testca.Options{CN: "hub"})
	testca.WriteFile(t, f.Cert, next.CertPEM)
	testca.WriteFile(t, f.Key, next.KeyPEM)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.WaitFor(t, 10*time.Second, "reloaded certificate material", "serial="+next.Cert.SerialNumber.Text(16), "material=\"cert CN=\\\"hub\\\" serial "+next.Cert.SerialNumber.Text(16))
}
