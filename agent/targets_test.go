package agent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// targetsTOML is a [[service]] with several targets and extra keys.
func targetsTOML(name string, targets []string, extra string) string {
	q := make([]string, len(targets))
	for i, t := range targets {
		q[i] = fmt.Sprintf("%q", t)
	}
	return fmt.Sprintf("[[service]]\nname = %q\ntargets = [%s]\nallow = [\"*\"]\n%s", name, strings.Join(q, ", "), extra)
}

// transfer sends size random bytes through addr to an echoing service
// and checks that the same bytes come back, by SHA-256.
func targetTransfer(t *testing.T, addr net.Addr, size int64) {
	t.Helper()
	c := testnet.Dial(t, addr.String())
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), rand.NewChaCha8([32]byte{7}), size); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.CloseWrite()
	if sent, back := [32]byte(h.Sum(nil)), <-got; sent != back {
		t.Fatalf("SHA-256 of what came back %x differs from what was sent %x", back, sent)
	}
}

// TestTargetsFailover: of two targets the first is down (a Unix socket
// nobody serves); streams still work through the second, the log says
// which target failed and which was used, and status shows both.
func TestTargetsFailover(t *testing.T) {
	down := "unix:" + filepath.Join(t.TempDir(), "down.sock")
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	up := ln.Addr().String()
	hub, site := startPair(t, targetsTOML("db", []string{down, up}, ""), "db")

	targetTransfer(t, site.ForwardAddrs()[0], 4<<20)
	hub.log.WaitFor(t, 10*time.Second, "service target down", "service=db", "target="+down, "by=dial")
	hub.log.WaitFor(t, 10*time.Second, "service target failed over", "service=db", "target="+up, "failed="+down)
	hub.log.WaitFor(t, 10*time.Second, "stream closed", "service=db", "target="+up, "outcome=clean")

	// The down target is skipped now: the next stream goes straight to
	// the second, with no new failover line.
	targetTransfer(t, site.ForwardAddrs()[0], 1<<20)
	hub.log.WaitFor(t, 10*time.Second, "stream closed", "service=db", "target="+up, "sent=1048576")
	if n := countLines(hub.log.String(), "service target failed over"); n != 1 {
		t.Errorf("%d failover lines, want 1 (a target marked down is skipped)", n)
	}

	s := hub.Status().Services[0]
	if s.Target != up || len(s.Targets) != 2 || s.Targets[0].Up || s.Targets[0].LastErr == "" || !s.Targets[1].Up {
		t.Errorf("status: %+v", s)
	}
}

// TestTargetsRoundRobin: with target_strategy = "round-robin" streams take
// the targets in turn.
func TestTargetsRoundRobin(t *testing.T) {
	var hits [2]atomic.Int64
	var addrs []string
	for i := range hits {
		ln := testnet.Listen(t)
		testnet.Serve(t, ln, func(c *net.TCPConn) {
			hits[i].Add(1)
			testnet.Echo(c)
		})
		addrs = append(addrs, ln.Addr().String())
	}
	hub, site := startPair(t, targetsTOML("web", addrs, "target_strategy = \"round-robin\"\n"), "web")
	const streams = 6
	for i := range streams {
		msg := fmt.Sprintf("stream %d", i)
		if got, err := echoOnce(t, site.ForwardAddrs()[0], msg); err != nil || got != msg {
			t.Fatalf("stream %d: %q, %v", i, got, err)
		}
	}
	if hits[0].Load() != streams/2 || hits[1].Load() != streams/2 {
		t.Errorf("connections per target: %d and %d, want %d each", hits[0].Load(), hits[1].Load(), streams/2)
	}
	for _, a := range addrs {
		hub.log.WaitFor(t, 10*time.Second, "stream closed", "service=web", "target="+a)
	}
}

// TestTargetsAllDown: with every target down the stream is refused as
// target unreachable, naming each target's error, and the application's
// connection ends without data.
func TestTargetsAllDown(t *testing.T) {
	dir := t.TempDir()
	a, b := "unix:"+filepath.Join(dir, "a.sock"), "unix:"+filepath.Join(dir, "b.sock")
	hub, site := startPair(t, targetsTOML("db", []string{a, b}, "")+"[admin]\nlisten = \"127.0.0.1:0\"\n", "db")
	if got, _ := echoOnce(t, site.ForwardAddrs()[0], "hello"); got != "" {
		t.Fatalf("got %q through a service with no target up", got)
	}
	line := hub.log.WaitFor(t, 10*time.Second, "stream refused", "reason=\"target unreachable\"", "service=db")
	if !strings.Contains(line, "every target failed") || !strings.Contains(line, a) || !strings.Contains(line, b) {
		t.Errorf("refusal does not name each target: %s", line)
	}
	// A failed dial marks both down: /readyz names the service.
	code, body := get(t, "http://"+hub.AdminAddr().String()+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `service "db" has no reachable target`) {
		t.Errorf("/readyz: %d %q", code, body)
	}
}

// TestTargetOrder: failover tries the targets as listed and round-robin
// one further each stream, those marked down last; without a health check
// a failed target is tried again after TargetDownFor, with one only once a
// check finds it up.
func TestTargetOrder(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	set := func(strategy string, health time.Duration) *targetSet {
		return newTargetSet(config.Service{Name: "s", Targets: []config.Address{"a:1", "b:1", "c:1"},
			TargetStrategy: strategy, HealthInterval: config.Duration(health)}, log)
	}
	names := func(ts []*target) string {
		var b bytes.Buffer
		for _, t := range ts {
			b.WriteString(string(t.addr[:1]))
		}
		return b.String()
	}
	now := time.Now()

	fo := set("failover", 0)
	fo.mark(fo.list[0], io.ErrUnexpectedEOF, "dial")
	if got := names(fo.order(now)); got != "bca" {
		t.Errorf("failover with a down: %s, want bca", got)
	}
	if got := names(fo.order(now.Add(config.TargetDownFor + time.Second))); got != "abc" {
		t.Errorf("failover once a's down time is over: %s, want abc", got)
	}
	// Tried again after its down time and failed again: down once more.
	fo.list[0].mu.Lock()
	fo.list[0].downSince = now.Add(-time.Hour)
	fo.list[0].mu.Unlock()
	fo.mark(fo.list[0], io.ErrUnexpectedEOF, "dial")
	if got := names(fo.order(time.Now())); got != "bca" {
		t.Errorf("failover with a down again: %s, want bca", got)
	}

	rr := set("round-robin", 0)
	var seq []string
	for range 4 {
		seq = append(seq, names(rr.order(now)))
	}
	if got := strings.Join(seq, " "); got != "abc bca cab abc" {
		t.Errorf("round-robin: %s", got)
	}
	rr.mark(rr.list[1], io.ErrUnexpectedEOF, "dial")
	if got := names(rr.order(now)); got != "cab" { // the 5th stream starts at b, which is down
		t.Errorf("round-robin with b down: %s, want cab", got)
	}

	hc := set("failover", time.Second)
	hc.mark(hc.list[0], io.ErrUnexpectedEOF, "health check")
	if got := names(hc.order(now.Add(time.Hour))); got != "bca" {
		t.Errorf("with a health check, a stays down until a check finds it up: %s", got)
	}
	if why := hc.unreachable(now); why != "" {
		t.Errorf("unreachable with b and c up: %q", why)
	}
	hc.mark(hc.list[1], io.ErrUnexpectedEOF, "health check")
	hc.mark(hc.list[2], io.ErrUnexpectedEOF, "health check")
	if why := hc.unreachable(now); !strings.Contains(why, "a:1: unexpected EOF") || !strings.Contains(why, "c:1") {
		t.Errorf("unreachable with all down: %q", why)
	}
	hc.mark(hc.list[2], nil, "health check")
	if got := names(hc.order(now)); got != "cab" {
		t.Errorf("with c back: %s, want cab", got)
	}
}
