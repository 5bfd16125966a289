package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildUpstreamPeer builds testdata/upstreampeer against unpatched yamux
// v0.1.2 from the module cache, in a module of its own (no replace).
func buildUpstreamPeer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/upstreampeer/main.go")
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module upstreampeer\n\ngo 1.26\n\nrequire github.com/hashicorp/yamux v0.1.2\n"
	gosum := "github.com/hashicorp/yamux v0.1.2 h1:XtB8kyFOyHXYVFnwT5C3+Bdo8gArse7j2AQ0DA0Uey8=\n" +
		"github.com/hashicorp/yamux v0.1.2/go.mod h1:C+zze2n6e/7wshOZep2A70/aQU6QBRWJO/G6FT1wIns=\n"
	for name, body := range map[string][]byte{"main.go": src, "go.mod": []byte(gomod), "go.sum": []byte(gosum)} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "upstreampeer")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	// The module cache that built Postern holds v0.1.2; no network.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("build the upstream yamux peer (needs github.com/hashicorp/yamux@v0.1.2 in the module cache: "+
			"go mod download github.com/hashicorp/yamux@v0.1.2): %v\n%s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// TestWireCompatibleWithUpstream runs a tunnel (the patched multiplexer)
// against a peer built with unpatched upstream yamux v0.1.2: streams both
// ways, data both ways past the initial window, half-close, and Reset seen
// by the peer as a reset.
func TestWireCompatibleWithUpstream(t *testing.T) {
	bin := buildUpstreamPeer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, ln.Addr().String())
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cancel()
		<-exited
	}()

	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tun, err := New(conn, false, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()

	// A: the peer's stream, never admitted here: 1 MiB arrives through
	// the initial 256 KiB window, then the answer (2 MiB) after its
	// half-close.
	a, err := tun.Accept()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(a)
	if err != nil || len(got) != 1<<20 || bytes.Count(got, []byte("A")) != 1<<20 {
		t.Fatalf("stream A: read %d bytes, err %v; want 1 MiB of 'A' and a clean end", len(got), err)
	}
	answer := bytes.Repeat([]byte("a"), 2<<20)
	if _, err := a.Write(answer); err != nil {
		t.Fatalf("stream A: write answer: %v", err)
	}
	a.Close()

	// B: our stream, admitted (its window grows): 8 MiB, half-close,
	// then the peer's count.
	b, err := tun.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Admit(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(bytes.Repeat([]byte("b"), 8<<20)); err != nil {
		t.Fatalf("stream B: write: %v", err)
	}
	b.Close()
	count, err := io.ReadAll(b)
	if err != nil || string(count) != "8388608" {
		t.Fatalf("stream B: peer answered %q, err %v; want \"8388608\"", count, err)
	}

	// C: our stream, reset once the peer is reading it.
	c, err := tun.Open()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	ok := make([]byte, 2)
	if _, err := io.ReadFull(c, ok); err != nil || string(ok) != "ok" {
		t.Fatalf("stream C: %q, %v", ok, err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(ok); err == nil {
		t.Error("stream C: read after Reset succeeded")
	}

	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("upstream peer: %v\n%s", err, stdout.String())
		}
	case <-ctx.Done():
		t.Fatalf("upstream peer did not finish\n%s", stdout.String())
	}
	want := []string{
		fmt.Sprintf("A: received %d bytes sha256 %x", len(answer), sha256.Sum256(answer)),
		"B: received 8388608 bytes",
		"C: read after reset: connection reset",
	}
	var lines []string
	for sc := bufio.NewScanner(&stdout); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("upstream peer said:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("deadline passed")
	}
}

// testOpts are a tunnel's settings for tests: the defaults, with a small
// buffer budget.
func testOpts() Options {
	return Options{
		StreamWindow:      16 << 20,
		KeepaliveInterval: 10 * time.Second,
		KeepaliveTimeout:  10 * time.Second,
		MaxStreams:        1024,
		WriteTimeout:      60 * time.Second,
		TunnelBuffer:      64 << 20,
		Buffer:            NewBudget(128 << 20),
	}
}
