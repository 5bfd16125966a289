package testnet

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, as t.Fatalf does, without failing the test.
type fatalRecorder struct {
	testing.TB
	msg chan string
}

func (r fatalRecorder) Helper() {}

func (r fatalRecorder) Fatalf(format string, args ...any) {
	r.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestLogBufferWaitsForCompleteLine: a line matches only once its newline
// is written, and the wait returns the line that has every part.
func TestLogBufferWaitsForCompleteLine(t *testing.T) {
	var logs LogBuffer
	io.WriteString(&logs, "level=INFO msg=starting\n")
	io.WriteString(&logs, `level=INFO msg="tunnel hub: conn`)

	rec := fatalRecorder{TB: t, msg: make(chan string, 1)}
	go func() {
		line := logs.WaitFor(rec, 50*time.Millisecond, "tunnel", "conn")
		rec.msg <- "matched " + line
	}()
	if msg := <-rec.msg; !strings.HasPrefix(msg, `no log line with ["tunnel" "conn"] within 50ms; log:`) {
		t.Errorf("waiting on an unfinished line: %s", msg)
	}

	io.WriteString(&logs, "ected\"\nlevel=INFO msg=later\n")
	if line := logs.WaitFor(t, 10*time.Second, "tunnel", "connected"); line != `level=INFO msg="tunnel hub: connected"` {
		t.Errorf("WaitFor = %q", line)
	}
	m := logs.WaitMatch(t, 10*time.Second, regexp.MustCompile(`msg=(\w+)$`))
	if len(m) != 2 || m[1] != "starting" {
		t.Errorf("WaitMatch = %q, want the submatch starting", m)
	}
}

// TestLogBufferWakesWaiter: a wait that starts before the line is written
// returns once another goroutine writes it.
func TestLogBufferWakesWaiter(t *testing.T) {
	var logs LogBuffer
	go io.WriteString(&logs, "tunnel hub: connected\n")
	if line := logs.WaitFor(t, 10*time.Second, "connected"); line != "tunnel hub: connected" {
		t.Errorf("WaitFor = %q", line)
	}
}

// TestServeEcho: Echo sends back what it reads and ends cleanly when the
// client half-closes.
func TestServeEcho(t *testing.T) {
	ln := Listen(t)
	Serve(t, ln, Echo)
	c := Dial(t, ln.Addr().String())
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if err := Drain(c); err != io.EOF {
		t.Errorf("Drain after a clean end: %v, want io.EOF", err)
	}
}
