// Command upstreampeer speaks the multiplexer as unpatched upstream yamux
// v0.1.2 does, for tunnel's wire-compatibility test. It is built in a
// module of its own (see compat_test.go), never with Postern's copy.
//
// It dials the address in os.Args[1] as the yamux client, then:
//   - opens stream A, sends 1 MiB, half-closes, reads the answer to EOF;
//   - accepts stream B, reads it to EOF, answers the byte count, closes;
//   - accepts stream C, answers "ok" to its first byte, and reports how
//     its next read ends (the test resets C).
//
// Each result is one line on stdout.
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/hashicorp/yamux"
)

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	cfg := yamux.DefaultConfig()
	cfg.MaxStreamWindowSize = 4 << 20
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		return err
	}
	defer sess.Close()

	a, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("open A: %w", err)
	}
	if _, err := a.Write(bytes.Repeat([]byte("A"), 1<<20)); err != nil {
		return fmt.Errorf("write A: %w", err)
	}
	a.Close()
	got, err := io.ReadAll(a)
	if err != nil {
		return fmt.Errorf("read A: %w", err)
	}
	fmt.Printf("A: received %d bytes sha256 %x\n", len(got), sha256.Sum256(got))

	b, err := sess.AcceptStream()
	if err != nil {
		return fmt.Errorf("accept B: %w", err)
	}
	n, err := io.Copy(io.Discard, b)
	if err != nil {
		return fmt.Errorf("read B: %w", err)
	}
	b.Write([]byte(strconv.FormatInt(n, 10)))
	b.Close()
	fmt.Printf("B: received %d bytes\n", n)

	c, err := sess.AcceptStream()
	if err != nil {
		return fmt.Errorf("accept C: %w", err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		return fmt.Errorf("read C: %w", err)
	}
	c.Write([]byte("ok"))
	_, err = c.Read(one)
	fmt.Printf("C: read after reset: %v\n", err)
	return nil
}
