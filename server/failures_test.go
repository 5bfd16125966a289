package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

func addr(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }

func newTestRefusalLog(period time.Duration, max int) (*refusalLog, *testnet.LogBuffer) {
	logs := &testnet.LogBuffer{}
	return newRefusalLog(slog.New(slog.NewTextHandler(logs, nil)), period, max), logs
}

// runLog runs f's timer until the test ends.
func runLog(t *testing.T, f *refusalLog) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// TestRefusalLogWords: the first refusal of a kind says that more are
// counted and for how long; repeats with other words (a different
// certificate, other first bytes) and other ports are counted, not logged.
func TestRefusalLogWords(t *testing.T) {
	f, logs := newTestRefusalLog(time.Minute, 16)
	f.log(addr("203.0.113.7", 50001), CauseCertificate, `client certificate CN="x" was signed by an unknown authority`)
	for i := range 5 {
		f.log(addr("203.0.113.7", 50002+i), CauseCertificate, fmt.Sprintf("client certificate CN=\"x%d\" expired", i))
	}
	f.log(addr("203.0.113.7", 50010), CauseNotTLS, "the client is not speaking TLS (first bytes 1603)")
	logs.WaitFor(t, time.Second, `level=WARN msg="tunnel refused" peer_addr=203.0.113.7:50001 cause=certificate`,
		`reason="client certificate CN=\"x\" was signed by an unknown authority"`,
		`repeats="further refusals of this kind from 203.0.113.7 are counted for 1m"`)
	logs.WaitFor(t, time.Second, `peer_addr=203.0.113.7:50010 cause=not_tls`)
	if n := strings.Count(logs.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for two kinds of refusal, want 2:\n%s", n, logs)
	}
	if n := f.size(); n != 2 {
		t.Fatalf("%d entries for one address and two causes, want 2", n)
	}
}

// TestRefusalLogFlush: when the period ends, a line says how many more
// came, without waiting for another refusal; the entry is then forgotten,
// and stopping writes what is still counted.
func TestRefusalLogFlush(t *testing.T) {
	f, logs := newTestRefusalLog(300*time.Millisecond, 16)
	runLog(t, f)
	start := time.Now()
	for i := range 4 {
		f.log(addr("203.0.113.7", 50000+i), CauseTimeout, "the client did not complete the TLS handshake in time")
	}
	f.log(addr("198.51.100.1", 50000), CauseTimeout, "the client did not complete the TLS handshake in time")
	line := logs.WaitFor(t, 5*time.Second, `msg="tunnel refusals counted" source=203.0.113.7 cause=timeout count=3`,
		`summary="3 more refusals from 203.0.113.7 (timeout) in the last 300ms"`)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("counts written after %s, before the period ended: %s", took, line)
	}
	if strings.Contains(logs.String(), "source=198.51.100.1") {
		t.Fatalf("a summary for an address refused once:\n%s", logs)
	}
	// The entry was forgotten with its count: a new burst starts with a new
	// first line.
	f.log(addr("203.0.113.7", 50100), CauseTimeout, "again")
	logs.WaitFor(t, time.Second, `peer_addr=203.0.113.7:50100 cause=timeout reason=again`)

	// Stopping writes the count in progress.
	g, glogs := newTestRefusalLog(time.Hour, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(ctx)
	}()
	g.log(addr("192.0.2.1", 1), CauseBusy, "x")
	g.log(addr("192.0.2.1", 2), CauseBusy, "x")
	cancel()
	<-done
	glogs.WaitFor(t, time.Second, `source=192.0.2.1 cause=busy count=1`, `summary="1 more refusals from 192.0.2.1 (busy) in the last `)
}

// TestRefusalLogBounded: refusals from many addresses with ever-different
// words keep at most max entries (plus one per cause for the addresses
// past max), and as many lines.
func TestRefusalLogBounded(t *testing.T) {
	const max = 64
	f, logs := newTestRefusalLog(time.Minute, max)
	for i := range 5000 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		cause := Causes[i%len(Causes)]
		f.log(addr(ip, 1000+i), cause, fmt.Sprintf("the client is not speaking TLS (first bytes %08x)", i*7919))
		if n := f.size(); n > max+len(Causes) {
			t.Fatalf("after %d refusals the log holds %d entries, more than %d+%d", i+1, n, max, len(Causes))
		}
	}
	// One address, many words: one entry.
	g, _ := newTestRefusalLog(time.Minute, max)
	for i := range 1000 {
		g.log(addr("192.0.2.1", i), CauseNotTLS, fmt.Sprintf("first bytes %x", i))
	}
	if n := g.size(); n != 1 {
		t.Fatalf("one address and cause with 1000 different messages: %d entries, want 1", n)
	}
	text := logs.String()
	if n := strings.Count(text, "\n"); n > max+len(Causes) {
		t.Fatalf("%d lines for refusals from 5000 addresses, want at most %d", n, max+len(Causes))
	}
	logs.WaitFor(t, time.Second, `repeats="the refusal log is tracking 64 addresses: further refusals of this kind from other addresses are counted for 1m"`)
}
