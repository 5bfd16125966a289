package osservice

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder collects notifications; runNotified calls it from goroutines.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) notify(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, s)
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) count(s string) int {
	n := 0
	for _, m := range r.snapshot() {
		if m == s {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunNotifiedLifecycle(t *testing.T) {
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyCalled := make(chan struct{})
	drainSeen := make(chan []string, 1)
	fn := func(ctx context.Context, ready func(Drain)) error {
		ready(Drain{Timeout: 2 * time.Minute})
		ready(Drain{Timeout: 2 * time.Minute}) // a second call must not send a second READY
		close(readyCalled)
		<-ctx.Done()
		// Draining: STOPPING must already be out, and pings go on.
		waitFor(t, "STOPPING before the drain ends", func() bool { return r.count(notifyStopping) == 1 })
		before := r.count(notifyWatchdog)
		waitFor(t, "watchdog pings while draining", func() bool { return r.count(notifyWatchdog) > before })
		drainSeen <- r.snapshot()
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- runNotified(ctx, fn, r.notify, 10*time.Millisecond) }()

	<-readyCalled
	waitFor(t, "two watchdog pings", func() bool { return r.count(notifyWatchdog) >= 2 })
	if n := r.count(notifyStopping); n != 0 {
		t.Fatalf("STOPPING sent %d times before the stop", n)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("runNotified: %v", err)
	}
	<-drainSeen
	msgs := r.snapshot()
	if msgs[0] != notifyReady {
		t.Errorf("first message %q, want %q (all: %q)", msgs[0], notifyReady, msgs)
	}
	if n := r.count(notifyReady); n != 1 {
		t.Errorf("READY sent %d times, want 1", n)
	}
	if n := r.count(notifyStopping); n != 1 {
		t.Errorf("STOPPING sent %d times, want 1", n)
	}
	// The stop timeout follows the drain: 2m plus StopMargin.
	if n := r.count("EXTEND_TIMEOUT_USEC=135000000"); n != 1 {
		t.Errorf("EXTEND_TIMEOUT_USEC=135000000 sent %d times, want once (all: %q)", n, msgs)
	}
	// runNotified has returned: its pinger has stopped.
	after := len(r.snapshot())
	time.Sleep(50 * time.Millisecond) // five ping periods, to see that none come
	if got := len(r.snapshot()); got != after {
		t.Errorf("%d messages after runNotified returned", got-after)
	}
}

func TestRunNotifiedFailure(t *testing.T) {
	var r recorder
	boom := errors.New("boom")
	err := runNotified(context.Background(), func(ctx context.Context, ready func(Drain)) error {
		return boom
	}, r.notify, 0)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if got, want := r.snapshot(), []string{notifyStopping}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q: no READY without ready(), one STOPPING, no watchdog with ping 0", got, want)
	}
}
