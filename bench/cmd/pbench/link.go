//go:build linux

package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/bench/report"
)

// The long, thin link: two network namespaces joined by a veth pair with
// netem delaying each direction by half the round trip or, where the
// kernel has no netem, by two TUN devices and pbench's own delay line
// (delayline.go). The addresses exist only inside these namespaces.
const (
	nsClient   = "pbench-a"
	nsServer   = "pbench-b"
	nsProbe    = "pbench-probe"
	vethClient = "pbench-va"
	vethServer = "pbench-vb"
	tunClient  = "pbench-ta"
	tunServer  = "pbench-tb"
	addrClient = "10.203.77.1"
	addrServer = "10.203.77.2"
	linkRTT    = 40 * time.Millisecond
)

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func inNS(ns string, args ...string) error {
	return ip(append([]string{"netns", "exec", ns}, args...)...)
}

// probeNetem reports why netem cannot be used, or nil. It tries netem on
// the loopback device of a namespace of its own, so nothing else is
// touched.
func probeNetem() error {
	ip("netns", "del", nsProbe)
	if err := ip("netns", "add", nsProbe); err != nil {
		return err
	}
	defer ip("netns", "del", nsProbe)
	return inNS(nsProbe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
}

// setupLink builds the two namespaces and the delayed link between them:
// a veth pair with netem, or with emulate the TUN devices and delay line.
// delay 0 leaves the delay out (for checking the wiring).
func setupLink(delay time.Duration, emulate bool) (cleanup func(), err error) {
	removeNS := func() {
		ip("netns", "del", nsClient)
		ip("netns", "del", nsServer)
	}
	removeNS() // leftovers of an interrupted run
	steps := [][]string{
		{"netns", "add", nsClient},
		{"netns", "add", nsServer},
		{"-n", nsClient, "link", "set", "lo", "up"},
		{"-n", nsServer, "link", "set", "lo", "up"},
	}
	if !emulate {
		steps = append(steps,
			[]string{"link", "add", vethClient, "netns", nsClient, "type", "veth", "peer", "name", vethServer, "netns", nsServer},
			[]string{"-n", nsClient, "addr", "add", addrClient + "/30", "dev", vethClient},
			[]string{"-n", nsServer, "addr", "add", addrServer + "/30", "dev", vethServer},
			[]string{"-n", nsClient, "link", "set", vethClient, "up"},
			[]string{"-n", nsServer, "link", "set", vethServer, "up"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			removeNS()
			return nil, err
		}
	}
	if emulate {
		l, err := startTUNLink(nsClient, tunClient, addrClient, nsServer, tunServer, addrServer, delay)
		if err != nil {
			removeNS()
			return nil, err
		}
		return func() { l.stop(); removeNS() }, nil
	}
	if delay > 0 {
		half := fmt.Sprintf("%dms", delay.Milliseconds()/2)
		for _, d := range [][2]string{{nsClient, vethClient}, {nsServer, vethServer}} {
			// A queue long enough for a full window in flight.
			if err := inNS(d[0], "tc", "qdisc", "add", "dev", d[1], "root", "netem", "delay", half, "limit", "100000"); err != nil {
				removeNS()
				return nil, err
			}
		}
	}
	return removeNS, nil
}

// benchLink runs one stream over the 40 ms link, directly and through
// Postern, in turn.
func (r *runner) benchLink(ctx context.Context) error {
	delay, emulate := linkRTT, false
	if r.linkNoDelay {
		delay = 0
		r.note("%s: run without a delay (-link-no-delay): checks the wiring only", report.Link40ms)
	} else if err := probeNetem(); err != nil {
		emulate = true
		r.note("%s: this kernel refused netem (%v); the link is pbench's own: TUN devices (MTU %d) and a delay line of %v each way, without a bandwidth limit",
			report.Link40ms, err, tunMTU, delay/2)
	}
	cleanup, err := setupLink(delay, emulate)
	if err != nil {
		return err
	}
	defer cleanup()

	const iperfPort, tunnelPort, frontPort = "5201", "7443", "15201"
	iperf, err := startProc(r.dir, "link-iperf3-server", "ip", "netns", "exec", nsServer, "iperf3", "-s", "-p", iperfPort)
	if err != nil {
		return err
	}
	defer iperf.stop()
	srvConf, err := writeFile(r.dir, "link-postern-server.toml", posternServerConf(r.certs, r.set.window,
		addrServer+":"+tunnelPort, routes{http: "127.0.0.1:9", bulk: "127.0.0.1:" + iperfPort}))
	if err != nil {
		return err
	}
	cliConf, err := writeFile(r.dir, "link-postern-client.toml", posternClientConf(r.certs, r.set.window,
		addrServer+":"+tunnelPort, routes{http: "127.0.0.1:15080", bulk: "127.0.0.1:" + frontPort}))
	if err != nil {
		return err
	}
	srv, err := startProc(r.dir, "link-postern-server", "ip", "netns", "exec", nsServer, r.bin, "run", "-c", srvConf)
	if err != nil {
		return err
	}
	defer srv.stop()
	cli, err := startProc(r.dir, "link-postern-client", "ip", "netns", "exec", nsClient, r.bin, "run", "-c", cliConf)
	if err != nil {
		return err
	}
	defer cli.stop()

	prefix := []string{"ip", "netns", "exec", nsClient}
	runs := map[string][]float64{}
	for rep := range r.set.reps {
		for _, c := range []struct{ tunnel, addr string }{
			{report.Direct, addrServer + ":" + iperfPort},
			{report.Postern, "127.0.0.1:" + frontPort},
		} {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res, err := runIperfRetry(ctx, prefix, c.addr, r.set.link, 1)
			if err != nil {
				for _, p := range []*proc{srv, cli, iperf} {
					if p.exited() {
						err = fmt.Errorf("%v; %s exited: %s", err, p.name, p.tail())
					}
				}
				return fmt.Errorf("%s: %w", c.tunnel, err)
			}
			runs[c.tunnel] = append(runs[c.tunnel], res.bps/1e9)
			r.logf("%-8s %-14s run %d/%d: %6.3f Gbit/s", c.tunnel, report.Link40ms, rep+1, r.set.reps, res.bps/1e9)
		}
	}
	for t, v := range runs {
		r.rep.Add(t, report.Link40ms, report.Gbps, v)
	}
	return nil
}
