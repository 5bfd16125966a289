package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern-tunnel/postern/config"
)

// Redundant targets: a [[service]] may list several targets. Each stream
// tries them in the service's order (failover: as listed; round-robin:
// starting one further each stream), skipping those marked down unless
// every one is; each attempt gets dial_timeout, so a stream waits at most
// dial_timeout × the number of targets. A failed dial marks its target
// down; a successful one marks it up. Without health_interval a down
// target is tried again after config.TargetDownFor; with it, a connect
// check every health_interval marks each target up or down. /readyz lists
// the services with no target up.

// targetSet is a service's targets and what is known of their health.
type targetSet struct {
	service    string
	list       []*target
	roundRobin bool
	next       atomic.Uint64 // round-robin: the stream count
	health     time.Duration // health_interval; 0: passive only
	downFor    time.Duration // passive only: how long a failed dial marks a target down
	log        *slog.Logger
	last       atomic.Pointer[config.Address] // the target the latest stream used
}

// target is one address of a service, with its health.
type target struct {
	addr config.Address

	mu        sync.Mutex
	downSince time.Time // zero while up
	lastErr   string
}

func newTargetSet(sc config.Service, log *slog.Logger) *targetSet {
	ts := &targetSet{service: sc.Name, roundRobin: sc.TargetStrategy == "round-robin",
		health: sc.HealthInterval.D(), downFor: config.TargetDownFor, log: log}
	for _, addr := range sc.TargetList() {
		ts.list = append(ts.list, &target{addr: addr})
	}
	return ts
}

// up reports whether t counts as reachable at now: not marked down, or
// (with passive checks only) marked down long enough ago to try again.
func (ts *targetSet) up(t *target, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.downSince.IsZero() || (ts.health == 0 && now.Sub(t.downSince) >= ts.downFor)
}

// mark records the result of a dial or check of t, and logs a change.
func (ts *targetSet) mark(t *target, err error, how string) {
	t.mu.Lock()
	wasUp := t.downSince.IsZero()
	if err == nil {
		t.downSince, t.lastErr = time.Time{}, ""
	} else {
		// From the latest failure: without a health check, the time a
		// target stays down counts from it.
		t.downSince, t.lastErr = time.Now(), err.Error()
	}
	t.mu.Unlock()
	switch {
	case err != nil && wasUp:
		ts.log.Warn("service target down", "service", ts.service, "target", t.addr, "by", how, "err", err)
	case err == nil && !wasUp:
		ts.log.Info("service target up", "service", ts.service, "target", t.addr, "by", how)
	}
}

// order is the order a new stream tries the targets in: the strategy's
// order, those marked down last.
func (ts *targetSet) order(now time.Time) []*target {
	n := len(ts.list)
	first := 0
	if ts.roundRobin && n > 1 {
		first = int((ts.next.Add(1) - 1) % uint64(n))
	}
	out := make([]*target, 0, n)
	var down []*target
	for i := range n {
		t := ts.list[(first+i)%n]
		if ts.up(t, now) {
			out = append(out, t)
		} else {
			down = append(down, t)
		}
	}
	return append(out, down...)
}

// dial connects to the first target that answers, in order, each attempt
// bounded by timeout, and logs each target that failed.
func (ts *targetSet) dial(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), timeout time.Duration) (net.Conn, config.Address, error) {
	var errs []error
	var failed []string
	for _, t := range ts.order(time.Now()) {
		if ctx.Err() != nil {
			break
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		c, err := dial(dctx, t.addr.Network(), t.addr.NetAddr())
		cancel()
		if err == nil {
			ts.mark(t, nil, "dial")
			ts.last.Store(&t.addr)
			if len(failed) > 0 {
				ts.log.Warn("service target failed over", "service", ts.service, "target", t.addr, "failed", strings.Join(failed, ", "))
			}
			return c, t.addr, nil
		}
		if ctx.Err() != nil { // the agent stops: not the target's fault
			errs = append(errs, fmt.Errorf("%s: %w", t.addr, err))
			break
		}
		ts.mark(t, err, "dial")
		failed = append(failed, string(t.addr))
		errs = append(errs, fmt.Errorf("%s: %w", t.addr, err))
	}
	if len(errs) == 1 {
		return nil, "", errs[0]
	}
	return nil, "", fmt.Errorf("every target failed: %w", errors.Join(errs...))
}

// shown is the target status shows for the service: the one the latest
// stream used, else the first.
func (ts *targetSet) shown() config.Address {
	if p := ts.last.Load(); p != nil {
		return *p
	}
	return ts.list[0].addr
}

// TargetStatus is one target of a service.
type TargetStatus struct {
	Addr    string `json:"addr"`
	Up      bool   `json:"up"`
	LastErr string `json:"last_error,omitempty"`
}

func (ts *targetSet) status(now time.Time) []TargetStatus {
	out := make([]TargetStatus, len(ts.list))
	for i, t := range ts.list {
		up := ts.up(t, now)
		t.mu.Lock()
		out[i] = TargetStatus{Addr: string(t.addr), Up: up, LastErr: t.lastErr}
		t.mu.Unlock()
	}
	return out
}

// unreachable is why the service has no target up, or "" when one is.
func (ts *targetSet) unreachable(now time.Time) string {
	var why []string
	for _, t := range ts.list {
		if ts.up(t, now) {
			return ""
		}
		t.mu.Lock()
		why = append(why, fmt.Sprintf("%s: %s", t.addr, t.lastErr))
		t.mu.Unlock()
	}
	return strings.Join(why, ", ")
}

// check connects to every target at once, each bounded by timeout, and
// marks it up or down.
func (ts *targetSet) check(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), timeout time.Duration) {
	var wg sync.WaitGroup
	for _, t := range ts.list {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			c, err := dial(dctx, t.addr.Network(), t.addr.NetAddr())
			if ctx.Err() != nil {
				if c != nil {
					c.Close()
				}
				return // stopping: the result says nothing of the target
			}
			if c != nil {
				c.Close()
			}
			ts.mark(t, err, "health check")
		})
	}
	wg.Wait()
}

// startHealthChecks runs the health check of every service with a
// health_interval, at once and then every interval, until ctx ends; wait
// waits for the checks to stop.
func (a *Agent) startHealthChecks(ctx context.Context) (wait func()) {
	a.certs.mu.Lock() // a reload starts and stops checks too
	defer a.certs.mu.Unlock()
	a.mu.Lock()
	svcs := make([]*service, 0, len(a.services))
	for _, svc := range a.services {
		svcs = append(svcs, svc)
	}
	a.mu.Unlock()
	for _, svc := range svcs {
		a.startHealth(ctx, svc)
	}
	return a.extra.Wait
}

// run checks the targets at once and then every health interval until
// ctx ends.
func (ts *targetSet) run(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), timeout time.Duration) {
	tick := time.NewTicker(ts.health)
	defer tick.Stop()
	for {
		ts.check(ctx, dial, timeout)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// servicesUnreachable lists, for /readyz, the services with no target up.
func (a *Agent) servicesUnreachable() []string {
	now := time.Now()
	var out []string
	cfg := a.snapshot()
	for _, sc := range cfg.Services { // config order
		svc := a.service(sc.Name)
		// A lone target without a health check does not make the agent
		// unready: one partner's backend failing one dial must not take a
		// hub behind a load balancer out of rotation. Redundant or
		// health-checked services count.
		if svc == nil || len(svc.targets.list) < 2 && sc.HealthInterval == 0 {
			continue
		}
		if why := svc.targets.unreachable(now); why != "" {
			out = append(out, fmt.Sprintf("service %q has no reachable target (%s)", svc.name, why))
		}
	}
	return out
}

// attr is the service's targets as a log value: the one target, or the
// list.
func (ts *targetSet) attr() slog.Value {
	if len(ts.list) == 1 {
		return slog.StringValue(string(ts.list[0].addr))
	}
	s := make([]string, len(ts.list))
	for i, t := range ts.list {
		s[i] = string(t.addr)
	}
	return slog.StringValue(strings.Join(s, ", "))
}
