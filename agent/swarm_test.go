//go:build unix

package agent

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
	"github.com/postern-tunnel/postern/server"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// The swarm: N partner sites, each with its own certificate from the
// hub's partner CA, dialing one hub at once from many loopback source
// addresses (as after a hub restart), each doing TLS, starting the
// multiplexer and confirming with one ping. The dialers run in a child
// process (this test binary, TestSwarmChild) so that the hub's process
// holds only the hub: its heap and its CPU time are the hub's own.

// swarmBytesPerTunnel is the documented bound (docs/scaling.md, "Capacity
// per hub") on what one idle partner tunnel costs the hub: heap and
// goroutine stacks in use after a GC, divided by the tunnels.
const swarmBytesPerTunnel = 36 << 10

// swarmSources is how many loopback source addresses the swarm dials
// from: with max_handshakes_per_address = 8, a swarm from one address
// would be paced by that bound, not by the hub.
const swarmSources = 250

// swarmResult is what the child reports once every dialer is up.
type swarmResult struct {
	up      int
	took    time.Duration
	retries int
}

// swarm is a running child process holding n tunnels to a hub.
type swarm struct {
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	result swarmResult
}

// startSwarm runs the child that dials n tunnels to addr with certificates
// from ca, and waits (up to within) for its report. The child holds its
// tunnels until the test ends.
func startSwarm(t testing.TB, addr string, ca *testca.CA, n int, within, keepalive time.Duration) *swarm {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	testca.WriteFile(t, filepath.Join(dir, "ca.crt"), ca.PEM)
	testca.WriteFile(t, filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSwarmChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "POSTERN_SWARM_ADDR="+addr, "POSTERN_SWARM_DIR="+dir,
		"POSTERN_SWARM_N="+strconv.Itoa(n), "POSTERN_SWARM_WITHIN="+within.String(),
		"POSTERN_SWARM_KEEPALIVE="+keepalive.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &swarm{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close() // the child closes its tunnels and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "swarm: "); ok {
				lines <- l
			}
		}
		close(lines)
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("swarm child exited without a report")
		}
		if _, err := fmt.Sscanf(l, "up=%d took=%d retries=%d", &s.result.up, &s.result.took, &s.result.retries); err != nil {
			t.Fatalf("swarm child reported %q: %v", l, err)
		}
	case <-time.After(within + 30*time.Second):
		t.Fatalf("no report from the swarm child within %s", within+30*time.Second)
	}
	return s
}

// TestSwarmChild is the swarm's process when POSTERN_SWARM_ADDR is set
// (see startSwarm); otherwise there is nothing to do.
func TestSwarmChild(t *testing.T) {
	addr := os.Getenv("POSTERN_SWARM_ADDR")
	if addr == "" {
		t.Skip("the swarm's child process, run by TestSwarmReconnect and BenchmarkSwarm")
	}
	dir := os.Getenv("POSTERN_SWARM_DIR")
	n, _ := strconv.Atoi(os.Getenv("POSTERN_SWARM_N"))
	within, _ := time.ParseDuration(os.Getenv("POSTERN_SWARM_WITHIN"))
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	caCert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testca.CA{Cert: caCert, Key: caKey.(crypto.Signer), PEM: certPEM}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	// One certificate per partner: max_tunnels_per_peer counts tunnels per
	// identity, and each partner site is its own identity. Valid for a
	// year, as a healthy partner's is: outside the hub's expiry warning
	// window, so the idle hub's CPU is its keepalives', not a first pass of
	// expiry warnings over every partner.
	notAfter := time.Now().Add(365 * 24 * time.Hour)
	certs := make([]tls.Certificate, n)
	for i := range certs {
		l := ca.Issue(t, testca.Options{CN: fmt.Sprintf("site-%d", i), NotAfter: notAfter})
		certs[i] = tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	}
	keepalive, err := time.ParseDuration(os.Getenv("POSTERN_SWARM_KEEPALIVE"))
	if err != nil {
		t.Fatal(err)
	}
	opts := tunnel.Options{StreamWindow: 256 << 10, KeepaliveInterval: keepalive,
		KeepaliveTimeout: 10 * time.Second, MaxStreams: 256, WriteTimeout: 10 * time.Second}

	var (
		mu      sync.Mutex
		held    []*tunnel.Tunnel
		retries atomic.Int64
		wg      sync.WaitGroup
		failed  atomic.Int64
		st      swarmStats
	)
	deadline := time.Now().Add(within)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i%swarmSources/250), byte(i%swarmSources%250+1))}
			cfg := &tls.Config{RootCAs: roots, ServerName: "hub.test", NextProtos: []string{wire.ALPN},
				Certificates: []tls.Certificate{certs[i]}}
			backoff := 100 * time.Millisecond
			for attempt := 0; ; attempt++ {
				tun, err := swarmDial(addr, src, cfg, opts, &st)
				if err == nil {
					mu.Lock()
					held = append(held, tun)
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					failed.Add(1)
					fmt.Fprintf(os.Stderr, "swarm dialer %d gave up after %d attempts: %v\n", i, attempt+1, err)
					return
				}
				retries.Add(1)
				// Backoff with jitter before the next attempt, as a
				// partner's client does (backoff_min doubling to
				// backoff_max).
				time.Sleep(backoff/2 + rand.N(backoff/2))
				backoff = min(2*backoff, 2*time.Second)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	fmt.Printf("swarm: up=%d took=%d retries=%d\n", len(held), took, retries.Load())
	fmt.Fprintf(os.Stderr, "swarm child: %s\n", st.String())
	// Hold the tunnels until the parent closes stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	for _, tun := range held {
		tun.Close()
	}
	os.Exit(0) // the tunnels' goroutines end on their own; no leak check here
}

// swarmDial makes one partner tunnel: TCP from src, TLS, the multiplexer,
// one ping answered.
func swarmDial(addr string, src *net.TCPAddr, cfg *tls.Config, opts tunnel.Options, st *swarmStats) (*tunnel.Tunnel, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	began := time.Now()
	nc, err := d.Dial("tcp", addr)
	st.dialed(time.Since(began), err)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	fw := &firstWrite{Conn: nc, connected: time.Now(), st: st}
	tc := tls.Client(fw, cfg)
	if err := tc.Handshake(); err != nil {
		st.failed(&st.handshake, err)
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	tun, err := tunnel.New(tc, true, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tun.Confirm(ctx); err != nil {
		st.failed(&st.confirm, err)
		tun.Close()
		return nil, err
	}
	return tun, nil
}

// swarmStats counts, in the swarm's child, why attempts failed and how
// long the steps took, so that a slow storm can be told apart: connections
// the kernel did not take at once (a dial of a second or more is a SYN
// sent again after the listen backlog overflowed), hellos written late
// (the partner's own CPU), or attempts the hub closed.
type swarmStats struct {
	mu        sync.Mutex
	dials     []time.Duration // each successful dial's time
	hellos    []time.Duration // from connected to the ClientHello written
	dialErr   map[string]int
	handshake map[string]int
	confirm   map[string]int
}

func (s *swarmStats) dialed(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.dialErr == nil {
			s.dialErr = map[string]int{}
		}
		s.dialErr[errKind(err)]++
		return
	}
	s.dials = append(s.dials, d)
}

func (s *swarmStats) failed(m *map[string]int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[errKind(err)]++
}

// errKind names an error by what the socket saw.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EPIPE):
		return "pipe"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other: " + err.Error()
}

func (s *swarmStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		slices.Sort(ds)
		slow := 0
		for _, d := range ds {
			if d >= 900*time.Millisecond {
				slow++
			}
		}
		at := func(f float64) time.Duration { return ds[int(f*float64(len(ds)-1))].Round(time.Millisecond) }
		return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s over-0.9s=%d", len(ds), at(.5), at(.9), at(.99), at(1), slow)
	}
	return fmt.Sprintf("dials[%s] hello-written-after[%s] dial-errors=%v handshake-errors=%v confirm-errors=%v",
		q(s.dials), q(s.hellos), s.dialErr, s.handshake, s.confirm)
}

// firstWrite notes when the first write (the ClientHello) went out.
type firstWrite struct {
	net.Conn
	connected time.Time
	st        *swarmStats
	done      bool
}

func (c *firstWrite) Write(p []byte) (int, error) {
	if !c.done {
		c.done = true
		d := time.Since(c.connected)
		c.st.mu.Lock()
		c.st.hellos = append(c.st.hellos, d)
		c.st.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// hubTunnels is the number of partner tunnels the hub holds.
func hubTunnels(r *running) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tunnels)
}

// startSwarmHub is a hub with one service open to every partner, logging
// errors only (a log line per tunnel would be measured too).
func startSwarmHub(t testing.TB, keepalive time.Duration) (*running, *pki) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	toml := hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")+"[log]\nlevel = \"error\"\n")
	toml = strings.Replace(toml, "[tunnel]\n", fmt.Sprintf("[tunnel]\nkeepalive_interval = %q\n", keepalive), 1)
	hub := start(t, dir, "hub", toml)
	return hub, p
}

// waitHubTunnels waits until the hub holds n tunnels.
func waitHubTunnels(t testing.TB, hub *running, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for hubTunnels(hub) != n {
		if time.Now().After(deadline) {
			t.Fatalf("the hub holds %d tunnels, want %d", hubTunnels(hub), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSwarmReconnect: 2,000 partner sites reconnecting to one hub at once
// (each its own certificate, from 250 source addresses, with the default
// handshake bounds) all come up, and an idle tunnel costs the hub less
// than the documented bound.
func TestSwarmReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a swarm of 2,000 tunnels takes about 10s of both cores")
	}
	const n = 2000
	hub, p := startSwarmHub(t, 10*time.Second)
	before, g0 := memInUse(), runtime.NumGoroutine()
	s := startSwarm(t, hub.ServerAddrs()[0].String(), p.ca, n, 90*time.Second, 10*time.Second)
	if s.result.up != n {
		t.Fatalf("%d of %d partner tunnels came up within 90s (%d retries)", s.result.up, n, s.result.retries)
	}
	waitHubTunnels(t, hub, n)
	per := int64(memInUse()-before) / n
	if path := os.Getenv("POSTERN_SWARM_HEAPPROFILE"); path != "" {
		// What the idle tunnels hold, for a look with go tool pprof.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		t.Logf("heap in use %d MiB, stacks in use %d MiB", m.HeapInuse>>20, m.StackInuse>>20)
	}
	t.Logf("%d partner tunnels up in %s (%.0f handshakes/s, %d retries); hub memory per idle tunnel %d KiB, %.1f goroutines",
		n, s.result.took.Round(time.Millisecond), float64(n)/s.result.took.Seconds(), s.result.retries, per>>10,
		float64(runtime.NumGoroutine()-g0)/n)
	bound := int64(swarmBytesPerTunnel)
	if raceDetector {
		bound = bound * 3 / 2 // measured: about 1.4 times as much with -race
	}
	if per > bound {
		t.Fatalf("an idle partner tunnel costs the hub %d KiB, want at most %d KiB (docs/scaling.md)", per>>10, bound>>10)
	}
}

// BenchmarkSwarm reports, for swarms of 1,000 to 10,000 partners
// reconnecting at once: handshakes per second, the hub's memory per idle
// tunnel, and the hub's CPU for keepalives over 20s of idleness (percent of
// one core for all tunnels, and CPU microseconds per tunnel per second).
// Run one size at a time, e.g.
//
//	go test -run '^$' -bench 'Swarm/n=10000/keepalive=10s' -benchtime 1x ./agent/
//
// keepalive is the keepalive_interval of the hub and of every partner
// (the default is 10s).
func BenchmarkSwarm(b *testing.B) {
	for _, c := range []struct {
		n         int
		keepalive time.Duration
	}{{1000, 10 * time.Second}, {2000, 10 * time.Second}, {3000, 10 * time.Second}, {5000, 10 * time.Second},
		{10000, 10 * time.Second}, {10000, 30 * time.Second}} {
		n := c.n
		b.Run(fmt.Sprintf("n=%d/keepalive=%s", n, c.keepalive), func(b *testing.B) {
			for b.Loop() {
				hub, p := startSwarmHub(b, c.keepalive)
				before, g0 := memInUse(), runtime.NumGoroutine()
				s := startSwarm(b, hub.ServerAddrs()[0].String(), p.ca, n, 5*time.Minute, c.keepalive)
				if s.result.up != n {
					b.Fatalf("%d of %d partner tunnels came up (%d retries)", s.result.up, n, s.result.retries)
				}
				waitHubTunnels(b, hub, n)
				mem := memInUse() - before
				if path := os.Getenv("POSTERN_SWARM_CPUPROFILE"); path != "" {
					// Where the idle hub spends its CPU.
					f, err := os.Create(path)
					if err != nil {
						b.Fatal(err)
					}
					pprof.StartCPUProfile(f)
				}
				cpu0, wall0 := cpuTime(), time.Now()
				time.Sleep(20 * time.Second) // the period measured, not a wait for a condition
				cpu, wall := cpuTime()-cpu0, time.Since(wall0)
				pprof.StopCPUProfile()
				b.ReportMetric(float64(n)/s.result.took.Seconds(), "handshakes/s")
				b.ReportMetric(float64(s.result.retries), "retries")
				b.ReportMetric(float64(mem)/float64(n)/1024, "KiB/tunnel")
				b.ReportMetric(float64(mem)/(1<<20), "MiB")
				b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/tunnel")
				b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%core-idle")
				b.ReportMetric(float64(cpu.Microseconds())/wall.Seconds()/float64(n), "cpu-us/tunnel/s")
				// Why attempts failed, as the hub counted them.
				for _, c := range []server.Cause{server.CauseBusy, server.CauseSourceBusy, server.CauseTimeout, server.CauseClosed} {
					var m dto.Metric
					hub.metrics.refused.WithLabelValues(string(c)).Write(&m)
					b.ReportMetric(m.GetCounter().GetValue(), "refused-"+string(c))
				}
				if ms, ok := statusLatency(b, hub, n); ok {
					b.ReportMetric(ms, "status-ms")
				}
			}
		})
	}
}

// statusLatency is the median time, in milliseconds, of five GET /status
// over the hub's control socket (what postern status asks), each read to
// its end and decoded; it checks the answer lists n tunnels.
func statusLatency(b *testing.B, hub *running, n int) (float64, bool) {
	path := hub.ControlAddr()
	if path == "" {
		return 0, false
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	defer c.CloseIdleConnections()
	var took []time.Duration
	for range 5 {
		began := time.Now()
		resp, err := c.Get("http://postern/status")
		if err != nil {
			b.Fatal(err)
		}
		var st Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(began))
		if len(st.Tunnels) != n {
			b.Fatalf("status lists %d tunnels, want %d", len(st.Tunnels), n)
		}
	}
	slices.Sort(took)
	return float64(took[len(took)/2].Microseconds()) / 1000, true
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
