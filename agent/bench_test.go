package agent

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// BenchmarkHeldConnections measures what one idle forwarded connection
// costs both agents together (heap and goroutine stacks, after a GC): the
// site and the hub run in this process, and the same connections made
// directly to the target are subtracted. Reported as bytes/conn.
func BenchmarkHeldConnections(b *testing.B) {
	const conns = 1000
	ln, hub, site := benchEchoPair(b)
	for b.Loop() {
		direct := holdConnections(b, ln.Addr(), conns)
		through := holdConnections(b, site.ForwardAddrs()[0], conns)
		waitIdle(b, hub, site)
		b.ReportMetric(float64(through-direct)/conns, "bytes/conn")
	}
}

// benchEchoPair starts an echo target and, in this process, a hub that
// serves it and a site that forwards to it, with the tunnel up. Logs are
// quiet: the test's in-memory log of each connection is not what a
// benchmark measures.
func benchEchoPair(b *testing.B) (target net.Listener, hub, site *running) {
	ln := testnet.Listen(b)
	testnet.Serve(b, ln, testnet.Echo)
	const quiet = "[log]\nlevel = \"warn\"\n"
	dir := b.TempDir()
	p := newPKI(b, dir)
	hub = start(b, dir, "hub", hubTOML(p, serviceTOML("echo", ln.Addr().String(), "*")+quiet))
	site = start(b, dir, "site", siteTOML(p, hub.ServerAddrs()[0].String(), "echo")+quiet)
	waitTunnels(b, site, 1)
	return ln, hub, site
}

// waitIdle waits (polling, with a deadline) until the agents have no
// stream left, so one round's closing does not count in the next.
func waitIdle(b *testing.B, agents ...*running) {
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range agents {
		for a.streams.Count() > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("%d streams still open", a.streams.Count())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// holdConnections opens n connections to addr, makes one round trip on
// each, and returns the memory in use while all are held idle, then closes
// them.
func holdConnections(b *testing.B, addr net.Addr, n int) uint64 {
	before := memInUse()
	conns := make([]net.Conn, 0, n)
	buf := make([]byte, 5)
	for range n {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		c.Write([]byte("hello"))
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	held := memInUse()
	for _, c := range conns {
		c.Close()
	}
	return held - before
}

func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkRequest is the per-request path, both agents in this process:
// one 64-byte message to an echo target and back per op, over one
// kept-alive connection ("keep-alive") or over a new connection per op
// ("new connection": dial, round trip, close). "direct" makes the same
// round trips to the target without the tunnel, so the difference in
// allocs/op and B/op is what the two agents allocate per request.
// cpu-µs/op is the CPU time of the whole process (agents, target and
// client) per op, up to the agents' last stream closing: steadier than
// ns/op on a shared machine.
func BenchmarkRequest(b *testing.B) {
	ln, hub, site := benchEchoPair(b)
	msg := make([]byte, 64)
	buf := make([]byte, len(msg))
	roundTrip := func(c net.Conn) {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	dial := func(addr net.Addr) net.Conn {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, to := range []struct {
		name string
		addr net.Addr
	}{{"direct", ln.Addr()}, {"through agents", site.ForwardAddrs()[0]}} {
		b.Run("keep-alive/"+to.name, func(b *testing.B) {
			c := dial(to.addr)
			defer c.Close()
			roundTrip(c)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				roundTrip(c)
			}
			reportCPU(b, cpu0)
		})
		b.Run("new connection/"+to.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				c := dial(to.addr)
				roundTrip(c)
				c.Close()
			}
			b.StopTimer()
			waitIdle(b, hub, site)
			reportCPU(b, cpu0)
		})
	}
}

// reportCPU reports the process's CPU time since cpu0 per op, where the
// platform tells it (cpuTime).
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu := cpuTime(); cpu > 0 {
		b.ReportMetric(float64(cpu-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	}
}
