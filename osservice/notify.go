package osservice

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Messages for the systemd notification protocol (sd_notify(3)).
const (
	notifyReady    = "READY=1"
	notifyStopping = "STOPPING=1"
	notifyWatchdog = "WATCHDOG=1"
	notifyExtend   = "EXTEND_TIMEOUT_USEC=%d"
)

// runNotified runs fn until it returns and reports its life to notify:
// READY when fn calls ready (once, however often it is called), WATCHDOG
// every ping while fn runs (ping 0: never), STOPPING when ctx is cancelled
// or fn returns, whichever is first, followed, when ready said how long the
// agent drains, by EXTEND_TIMEOUT_USEC of StopTimeout: a unit installed
// before shutdown_timeout grew still lets the drain finish. notify is called
// from one goroutine at a time.
func runNotified(ctx context.Context, fn RunFunc, notify func(string), ping time.Duration) error {
	var mu sync.Mutex
	send := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		notify(s)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)

	if ping > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(ping)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					send(notifyWatchdog)
				case <-done:
					return
				}
			}
		}()
	}

	var drain time.Duration // set by ready, under mu
	var stopping sync.Once
	stopped := func() {
		stopping.Do(func() {
			send(notifyStopping)
			mu.Lock()
			d := drain
			mu.Unlock()
			if d > 0 {
				send(fmt.Sprintf(notifyExtend, StopTimeout(d).Microseconds()))
			}
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			stopped()
		case <-done:
		}
	}()

	readyOnce := sync.OnceFunc(func() { send(notifyReady) })
	ready := func(d Drain) {
		mu.Lock()
		drain = d.Timeout
		mu.Unlock()
		readyOnce()
	}
	err := fn(ctx, ready)
	stopped()
	return err
}
