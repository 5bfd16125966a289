//go:build unix

package rawio_test

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/rawio"
)

// TestMain runs the echo process BenchmarkPingPong talks to when
// RAWIO_ECHO is set.
func TestMain(m *testing.M) {
	if os.Getenv("RAWIO_ECHO") != "" {
		echo()
		return
	}
	os.Exit(m.Run())
}

// echo listens on loopback, prints its address and echoes one connection
// in 64-byte messages until it ends.
func echo() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	os.Stdout.WriteString(ln.Addr().String() + "\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				break
			}
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
	}
}

// BenchmarkPingPong: one 64-byte message at a time to an echo in another
// process and back, through the connection's own Read and Write ("net")
// or rawio.Conn's ("rawio"). While the other process answers, this one is
// idle, as an agent is between the requests of one kept-alive client: the
// case raw system calls are for (see the package comment). cpu-ns/op is
// this process's user and system CPU per round trip (getrusage), less
// disturbed by a shared machine than ns/op.
func BenchmarkPingPong(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RAWIO_ECHO=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("echo process: %v", err)
	}
	addr := strings.TrimSpace(line)
	for _, c := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"net", func(c net.Conn) net.Conn { return c }},
		{"rawio", rawio.Wrap},
	} {
		b.Run(c.name, func(b *testing.B) {
			d, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			conn := c.wrap(d)
			msg, resp := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for range b.N {
				if _, err := conn.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, resp); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
