//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Where the kernel has no netem, the long, thin link is emulated by
// pbench itself: each namespace gets a TUN device instead of its end of
// the veth pair, and a delay line carries every IP packet from one
// device to the other no sooner than half the round trip after it left.
// TCP on both ends then sees the link as it would a real one: its
// windows, slow start and acknowledgements all cross the delay, which is
// what the scenario measures (a tunnel's flow control over a long link).
// What it does not emulate is a link's bandwidth: the delay line moves
// packets as fast as it can read and write them.

// tunMTU is the delay line's MTU: jumbo frames, so the line's own system
// calls (one per packet each way) stay a small part of the machine's
// work at the speeds a 40 ms round trip allows.
const tunMTU = 9000

// delayQueue bounds the packets in flight in one direction, as netem's
// limit does; a packet read when the queue is full is dropped. At
// tunMTU, 100,000 packets are 900 MB: far more than a TCP window.
const delayQueue = 100_000

// delayed is one packet on the line.
type delayed struct {
	due time.Time
	buf *[]byte // from packetPool
	n   int
}

var packetPool = sync.Pool{New: func() any { b := make([]byte, tunMTU+64); return &b }}

// delayLine carries packets from in to out (one packet per Read and per
// Write, as a TUN device gives and takes them), each no sooner than
// delay after it was read, in the order they were read, until in ends or
// fails (the caller closes in to stop it). A failed write, or ctx done,
// stops the writing; packets read after it are dropped. It returns the
// write's error, or in's (nil for io.EOF, a closed in, or ctx done).
// dropped counts packets dropped because the queue was full.
func delayLine(ctx context.Context, in io.Reader, out io.Writer, delay time.Duration, queue int, dropped *atomic.Int64) error {
	q := make(chan delayed, queue)
	readErr := make(chan error, 1)
	go func() {
		defer close(q)
		for {
			buf := packetPool.Get().(*[]byte)
			n, err := in.Read(*buf)
			if err != nil {
				packetPool.Put(buf)
				readErr <- err
				return
			}
			select {
			case q <- delayed{due: time.Now().Add(delay), buf: buf, n: n}:
			default:
				packetPool.Put(buf)
				dropped.Add(1)
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var writeErr error // once set, packets are drained, not written, until the reader stops
	for p := range q {
		if writeErr == nil {
			if wait := time.Until(p.due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					writeErr = ctx.Err()
				}
			}
		}
		if writeErr == nil {
			if _, err := out.Write((*p.buf)[:p.n]); err != nil {
				writeErr = err
			}
		}
		packetPool.Put(p.buf)
	}
	err := <-readErr
	switch {
	case writeErr != nil && !errors.Is(writeErr, context.Canceled):
		return writeErr
	case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed), ctx.Err() != nil:
		return nil
	}
	return err
}

// openTUN creates the TUN device name in network namespace ns (as
// created by `ip netns add`) and returns it, non-blocking, as a file the
// runtime's poller waits on. The device lives as long as the file is
// open. Run it as root.
func openTUN(ns, name string) (f *os.File, err error) {
	err = inNamespace(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("creating TUN device %s in %s: %w", name, ns, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return f, err
}

// inNamespace runs f on a thread in network namespace ns (as created by
// `ip netns add`): devices and sockets f makes belong to ns.
func inNamespace(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters ns and never leaves it: it is not unlocked, so
		// the runtime ends it with this goroutine.
		runtime.LockOSThread()
		nsf, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer nsf.Close()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// tunLink is the emulated link: two TUN devices and the delay lines
// between them.
type tunLink struct {
	a, b    *os.File
	cancel  context.CancelFunc
	done    sync.WaitGroup
	dropped atomic.Int64
}

// startTUNLink creates TUN devices tunA in nsA and tunB in nsB (the
// namespaces exist already), delays every packet between them by half of
// rtt, and configures the devices with addresses addrA and addrB (/30).
func startTUNLink(nsA, tunA, addrA, nsB, tunB, addrB string, rtt time.Duration) (*tunLink, error) {
	l := &tunLink{}
	var err error
	if l.a, err = openTUN(nsA, tunA); err != nil {
		return nil, err
	}
	if l.b, err = openTUN(nsB, tunB); err != nil {
		l.a.Close()
		return nil, err
	}
	mtu := fmt.Sprint(tunMTU)
	for _, s := range [][]string{
		{"-n", nsA, "addr", "add", addrA + "/30", "dev", tunA},
		{"-n", nsB, "addr", "add", addrB + "/30", "dev", tunB},
		{"-n", nsA, "link", "set", tunA, "mtu", mtu, "up"},
		{"-n", nsB, "link", "set", tunB, "mtu", mtu, "up"},
	} {
		if err := ip(s...); err != nil {
			l.a.Close()
			l.b.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for _, d := range [][2]*os.File{{l.a, l.b}, {l.b, l.a}} {
		l.done.Go(func() { delayLine(ctx, d[0], d[1], rtt/2, delayQueue, &l.dropped) })
	}
	return l, nil
}

// stop ends the delay lines and removes both devices; it returns how
// many packets were dropped for a full queue.
func (l *tunLink) stop() int64 {
	l.cancel()
	l.a.Close()
	l.b.Close()
	l.done.Wait()
	return l.dropped.Load()
}
