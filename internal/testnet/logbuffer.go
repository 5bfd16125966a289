package testnet

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects log output, such as an agent's slog handler or a
// process's stdout and stderr, and lets a test wait for a line. Every
// Write wakes the waiters, so a wait costs nothing until something is
// logged. Safe for concurrent use; the zero value is ready to use.
type LogBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

// Write appends p and wakes the waiters.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return len(p), nil
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// WaitFor waits until a complete line contains every one of parts and
// returns it without its newline. It fails the test, showing the whole
// log, when no such line arrives within timeout.
func (l *LogBuffer) WaitFor(t testing.TB, timeout time.Duration, parts ...string) string {
	t.Helper()
	return l.waitLine(t, timeout, fmt.Sprintf("%q", parts), func(line string) bool {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				return false
			}
		}
		return true
	})
}

// WaitMatch waits until a complete line matches re and returns its
// submatches, as re.FindStringSubmatch does. It fails the test like
// WaitFor.
func (l *LogBuffer) WaitMatch(t testing.TB, timeout time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	line := l.waitLine(t, timeout, fmt.Sprintf("`%s`", re), re.MatchString)
	return re.FindStringSubmatch(line)
}

// waitLine waits until a complete line satisfies match and returns it;
// what describes match in the failure message.
func (l *LogBuffer) waitLine(t testing.TB, timeout time.Duration, what string, match func(line string) bool) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		text, changed := l.snapshot()
		for _, line := range strings.SplitAfter(text, "\n") {
			if line, complete := strings.CutSuffix(line, "\n"); complete && match(line) {
				return line
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log line with %s within %s; log:\n%s", what, timeout, text)
		}
	}
}

// snapshot returns the text so far and a channel closed by the next Write.
func (l *LogBuffer) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.buf.String(), l.changed
}
