package agent

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// silentConns opens n TCP connections to addr from the loopback source
// addresses given, in turn, and leaves them silent until the test ends
// (or the hub closes them).
func silentConns(t *testing.T, addr string, n int, sources []string) {
	t.Helper()
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(sources[i%len(sources)])}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	close(errs)
	for err := range errs {
		t.Fatalf("silent connection: %v", err)
	}
}

// TestSilentConnectionsBesidePartner: 300 silent TCP connections on the
// tunnel port, from other addresses or from the partner's own, do not keep
// the partner's tunnel from coming up at once (with the default bounds:
// 128 handshakes, 8 per address, hello_timeout 3s, handshake_timeout 10s).
func TestSilentConnectionsBesidePartner(t *testing.T) {
	others := make([]string, 60)
	for i := range others {
		others[i] = fmt.Sprintf("127.0.2.%d", i+1)
	}
	for _, tc := range []struct {
		name    string
		sources []string
	}{
		{"from 60 other addresses", others},
		{"from the partner's address", []string{"127.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := newPKI(t, dir)
			ln := testnet.Listen(t)
			testnet.Serve(t, ln, testnet.Echo)
			hub := start(t, dir, "hub", hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")))
			addr := hub.ServerAddrs()[0].String()
			silentConns(t, addr, 300, tc.sources)

			start := time.Now()
			site := startWith(t, dir, "site", siteTOML(p, addr, "echo"), Options{})
			site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("the partner's tunnel took %s to come up beside 300 silent connections, want under 2s", took)
			}
			if got, err := echoOnce(t, site.ForwardAddrs()[0], "through"); err != nil || got != "through" {
				t.Fatalf("round trip: %q, %v", got, err)
			}
		})
	}
}

// TestProbeCounted: a connection to the tunnel port that closes without a
// byte (a load balancer's health check) bumps postern_tunnel_probes_total
// and logs no warning; a refused handshake is counted by cause.
func TestProbeCounted(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	hub := start(t, dir, "hub", hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*"))+"[admin]\nlisten = \"127.0.0.1:0\"\n")
	addr := hub.ServerAddrs()[0].String()
	base := "http://" + hub.AdminAddr().String()

	probe := testnet.Dial(t, addr)
	from := probe.LocalAddr().String()
	probe.Close()
	hub.log.WaitFor(t, 5*time.Second, `level=DEBUG msg="tunnel probe: closed without sending a byte" peer_addr=`+from)
	junk := testnet.Dial(t, addr)
	junk.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	junk.CloseWrite()
	hub.log.WaitFor(t, 5*time.Second, `level=WARN msg="tunnel refused"`, "cause=http")

	for _, line := range strings.Split(hub.log.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, from) {
			t.Fatalf("the probe logged a warning: %s", line)
		}
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^postern_tunnel_probes_total 1$`),
		regexp.MustCompile(`(?m)^postern_handshake_failures_total\{cause="http"\} 1$`),
		regexp.MustCompile(`(?m)^postern_handshake_failures_total\{cause="timeout"\} 0$`),
	}
	_, metrics := get(t, base+"/metrics")
	for _, re := range want {
		if !re.MatchString(metrics) {
			t.Errorf("/metrics lacks %s:\n%s", re, metrics)
		}
	}
	if strings.Contains(metrics, `cause="probe"`) {
		t.Errorf("probes counted as handshake failures too:\n%s", metrics)
	}
}
