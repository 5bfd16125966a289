package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sync"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
)

// Live reconfiguration: a reload (SIGHUP, postern reload, POST /reload)
// reads the whole config file again and applies what changed. Services
// (target, targets, allow, limits, proxy_protocol, ...), clients
// (reconfig_clients.go) and forwards are applied at once; a live stream
// whose peer the new allow list no longer names is cut. [[server]] (with what it inherits from [tls]), [tunnel], [log], [admin],
// [acme], name and shutdown_timeout are not changed by a reload: the
// result says "restart needed for: ..." instead. A file that does not load
// or validate changes nothing.

// service returns the service called name now, or nil.
func (a *Agent) service(name string) *service {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.services[name]
}

// liveStreams are the inbound streams being relayed, so that a reload can
// cut those whose peer a service no longer allows.
type liveStreams struct {
	mu sync.Mutex
	m  map[*liveStream]struct{}
}

type liveStream struct {
	service string
	chains  [][]*x509.Certificate
	cut     func()
}

// track registers a stream relayed to svc. It returns the function that
// unregisters it, or ok = false when a reload replaced svc meanwhile and
// the new allow list refuses the peer (the stream must not be relayed).
func (a *Agent) track(svc *service, chains [][]*x509.Certificate, cut func()) (done func(), ok bool) {
	ls := &liveStream{service: svc.name, chains: chains, cut: cut}
	a.live.mu.Lock()
	defer a.live.mu.Unlock()
	if now := a.service(svc.name); now != svc {
		if now == nil {
			return nil, false
		}
		if _, ok := now.allow.MatchVerified(chains); !ok {
			return nil, false
		}
	}
	if a.live.m == nil {
		a.live.m = map[*liveStream]struct{}{}
	}
	a.live.m[ls] = struct{}{}
	return func() {
		a.live.mu.Lock()
		delete(a.live.m, ls)
		a.live.mu.Unlock()
	}, true
}

// cutDisallowed cuts the live streams of the named services whose peer
// the service's current allow list refuses (or whose service is gone) and
// says how many it cut.
func (a *Agent) cutDisallowed(names map[string]bool) int {
	a.live.mu.Lock()
	var cut []*liveStream
	for ls := range a.live.m {
		if !names[ls.service] {
			continue
		}
		svc := a.service(ls.service)
		if svc != nil {
			if _, ok := svc.allow.MatchVerified(ls.chains); ok {
				continue
			}
		}
		cut = append(cut, ls)
		delete(a.live.m, ls)
	}
	a.live.mu.Unlock()
	for _, ls := range cut {
		peer := ""
		if len(ls.chains) > 0 && len(ls.chains[0]) > 0 {
			peer = identity.Describe(ls.chains[0][0])
		}
		a.log.Warn("stream cut: identity no longer allowed after reload", "service", ls.service, "peer", peer)
		ls.cut()
	}
	return len(cut)
}

// ConfigChanges is what a new config changes against a running one.
type ConfigChanges struct {
	Applied []string // what a reload applies at once
	Restart []string // what only a restart applies
}

// DiffConfig says what a reload from old to new would change.
func DiffConfig(old, new *config.Config) ConfigChanges {
	var d ConfigChanges
	olds := map[string]config.Service{}
	for _, s := range old.Services {
		olds[s.Name] = s
	}
	news := map[string]bool{}
	for _, s := range new.Services {
		news[s.Name] = true
		o, ok := olds[s.Name]
		switch {
		case !ok:
			d.Applied = append(d.Applied, fmt.Sprintf("service %q: added", s.Name))
		default:
			if what := serviceChanges(o, s); len(what) > 0 {
				d.Applied = append(d.Applied, fmt.Sprintf("service %q: changed %s", s.Name, joinKeys(what)))
			}
		}
	}
	for _, s := range old.Services {
		if !news[s.Name] {
			d.Applied = append(d.Applied, fmt.Sprintf("service %q: removed", s.Name))
		}
	}
	kept, added := matchForwards(old.Forwards, new.Forwards)
	for i, f := range old.Forwards {
		if !kept[i] {
			d.Applied = append(d.Applied, fmt.Sprintf("forward %s: removed (service %q via %q)", f.Listen, f.Service, f.Via))
		}
	}
	for _, f := range added {
		d.Applied = append(d.Applied, fmt.Sprintf("forward %s: added (service %q via %q)", f.Listen, f.Service, f.Via))
	}
	oldc := map[string]config.Client{}
	for _, c := range old.Clients {
		oldc[c.Name] = c
	}
	newc := map[string]bool{}
	for _, c := range new.Clients {
		newc[c.Name] = true
		o, ok := oldc[c.Name]
		switch {
		case !ok:
			d.Applied = append(d.Applied, fmt.Sprintf("client %q: added", c.Name))
		case !sameIgnoringLine(o, c):
			d.Applied = append(d.Applied, fmt.Sprintf("client %q: changed (a new one dials; the old one drains, its forwards reopen)", c.Name))
		}
	}
	for _, c := range old.Clients {
		if !newc[c.Name] {
			d.Applied = append(d.Applied, fmt.Sprintf("client %q: removed (its tunnels close when their streams end)", c.Name))
		}
	}
	d.Restart = restartNeeded(old, new)
	return d
}

// matchForwards pairs each old forward with an identical new one (a
// forward is known by all its keys, as several may listen on port 0): kept
// says which old ones stay, added are the new ones left over. A changed
// forward is thus removed and added again.
func matchForwards(old, new []config.Forward) (kept []bool, added []config.Forward) {
	kept = make([]bool, len(old))
	free := map[string][]int{} // old forwards not yet matched, by their keys
	for i, o := range old {
		k := forwardKey(o)
		free[k] = append(free[k], i)
	}
	for _, n := range new {
		k := forwardKey(n)
		if idx := free[k]; len(idx) > 0 {
			kept[idx[0]], free[k] = true, idx[1:]
			continue
		}
		added = append(added, n)
	}
	return kept, added
}

// forwardKey is every key of f but its line.
func forwardKey(f config.Forward) string {
	f.Line = 0
	return fmt.Sprintf("%#v", f)
}

// serviceChanges lists the keys of a service that differ.
func serviceChanges(o, n config.Service) []string {
	var keys []string
	ov, nv := reflect.ValueOf(o), reflect.ValueOf(n)
	t := ov.Type()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			keys = append(keys, tag)
		}
	}
	return keys
}

func joinKeys(keys []string) string {
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += k
	}
	return out
}

// sameIgnoringLine compares two config tables by their keys, ignoring
// where they are written.
func sameIgnoringLine(x, y any) bool {
	bx, err1 := json.Marshal(withoutLines(x))
	by, err2 := json.Marshal(withoutLines(y))
	return err1 == nil && err2 == nil && string(bx) == string(by)
}

// withoutLines turns v into a JSON tree with every "Line" key removed.
func withoutLines(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var tree any
	if json.Unmarshal(b, &tree) != nil {
		return v
	}
	var strip func(any) any
	strip = func(t any) any {
		switch t := t.(type) {
		case map[string]any:
			delete(t, "Line")
			for k, x := range t {
				t[k] = strip(x)
			}
		case []any:
			for i, x := range t {
				t[i] = strip(x)
			}
		}
		return t
	}
	return strip(tree)
}

// restartNeeded names the parts of the config a reload does not apply.
func restartNeeded(old, new *config.Config) []string {
	var out []string
	add := func(what string, x, y any) {
		if !sameIgnoringLine(x, y) {
			out = append(out, what)
		}
	}
	add("name", old.Name, new.Name)
	add("shutdown_timeout", old.ShutdownTimeout, new.ShutdownTimeout)
	add("procs", old.Procs, new.Procs)
	// [tls] is not listed itself: servers and clients inherit it, so its
	// changes show as theirs.
	add("[tunnel]", old.Tunnel, new.Tunnel)
	add("[[server]]", old.Servers, new.Servers)
	add("[admin]", old.Admin, new.Admin)
	add("[acme]", old.ACME, new.ACME)
	add("[ca]", old.CA, new.CA)
	add("[log]", old.Log, new.Log)
	return out
}

// errNotApplied marks a reload whose new config was refused.
var errNotApplied = errors.New("config not applied; the agent keeps running the config it had")

// reloadConfig reads the config file again and applies services and
// forwards. It returns the lines of the reload result. A file that fails
// to load changes nothing. Called with a.certs.mu held.
func (a *Agent) reloadConfig() ([]string, error) {
	if a.cfg.Path == "" {
		return nil, nil
	}
	if a.draining.Load() {
		return nil, errors.New("agent is shutting down: config not reloaded")
	}
	data, err := os.ReadFile(a.cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotApplied, err)
	}
	nc, err := config.Parse(a.cfg.Path, data)
	if err != nil {
		a.log.Error("config reload refused; nothing changed", "config", a.cfg.Path, "err", err)
		return []string{"config " + a.cfg.Path + ": not applied, nothing changed: " + err.Error()}, fmt.Errorf("%w: %w", errNotApplied, err)
	}
	if err := errors.Join(CheckIdentities(nc)...); err != nil {
		// Often the CA files changed, not the config: the certificate
		// reload that follows (with the running config) checks the same
		// and keeps the material it had, saying so per endpoint.
		a.log.Error("config reload refused; services and forwards unchanged", "config", a.cfg.Path, "err", err)
		return []string{"config " + a.cfg.Path + ": services and forwards not changed: " + err.Error()}, err
	}
	old := a.snapshot()
	d := DiffConfig(old, nc)
	var report []string
	plan, err := a.planClients(old, nc)
	if err == nil {
		err = a.applyServices(old, nc)
	}
	if err != nil {
		return []string{"config " + a.cfg.Path + ": not applied, nothing changed: " + err.Error()}, fmt.Errorf("%w: %w", errNotApplied, err)
	}
	gone := a.commitClients(plan, nc)
	skipped := a.applyForwards(nc, gone)
	a.relabel() // metric labels follow the identities and services now configured
	report = append(report, d.Applied...)
	report = append(report, skipped...)
	if len(d.Restart) > 0 {
		report = append(report, "restart needed for: "+joinKeys(d.Restart)+" (not changed by the reload)")
		a.log.Warn("reload: restart needed to apply some changes", "restart_needed_for", joinKeys(d.Restart))
	}
	if len(d.Applied) == 0 && len(d.Restart) == 0 {
		report = append(report, "config "+a.cfg.Path+": services and forwards unchanged")
	}
	for _, line := range d.Applied {
		a.log.Info("reload applied", "change", line)
	}
	return report, nil
}

// snapshot is a copy of the running config, safe to read while a reload
// changes services and forwards.
func (a *Agent) snapshot() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := *a.cfg
	c.Services = slices.Clone(a.cfg.Services)
	c.Forwards = slices.Clone(a.cfg.Forwards)
	return &c
}

// applyServices swaps in the services of nc. Streams in progress keep the
// service they started with, except those of a peer the new allow list
// refuses: they are cut.
func (a *Agent) applyServices(old, nc *config.Config) error {
	olds := map[string]config.Service{}
	for _, s := range old.Services {
		olds[s.Name] = s
	}
	built := map[string]*service{}
	touched := map[string]bool{}
	for _, sc := range nc.Services {
		if o, ok := olds[sc.Name]; ok && len(serviceChanges(o, sc)) == 0 {
			continue
		}
		svc, err := a.buildService(sc)
		if err != nil {
			return err
		}
		built[sc.Name] = svc
		touched[sc.Name] = true
	}
	for _, s := range old.Services {
		if !slices.ContainsFunc(nc.Services, func(n config.Service) bool { return n.Name == s.Name }) {
			touched[s.Name] = true
		}
	}
	if len(touched) == 0 {
		a.mu.Lock()
		a.cfg.Services = nc.Services // the same services, perhaps on other lines
		a.mu.Unlock()
		return nil
	}
	a.mu.Lock()
	var stopped []*service
	for name := range touched {
		prev := a.services[name]
		n := built[name]
		if prev != nil && n != nil {
			// Unchanged targets and limits keep their state: health marks
			// and the streams counted against limits.
			if sameTargets(olds[name], findService(nc, name)) {
				n.targets, n.stopHealth = prev.targets, prev.stopHealth
				prev.stopHealth = nil
			}
			if sameLimits(olds[name], findService(nc, name)) {
				n.limits = prev.limits
			}
		}
		if prev != nil && prev.stopHealth != nil {
			stopped = append(stopped, prev)
		}
		if n == nil {
			delete(a.services, name)
		} else {
			a.services[name] = n
		}
	}
	a.cfg.Services = nc.Services
	runCtx := a.runCtx
	a.mu.Unlock()
	for _, s := range stopped {
		s.stopHealth()
	}
	if runCtx != nil {
		for _, n := range built {
			if n.stopHealth == nil {
				a.startHealth(runCtx, n)
			}
		}
	}
	a.cutDisallowed(touched)
	return nil
}

func findService(c *config.Config, name string) config.Service {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	return config.Service{}
}

func sameTargets(o, n config.Service) bool {
	return o.Target == n.Target && slices.Equal(o.Targets, n.Targets) && o.TargetStrategy == n.TargetStrategy &&
		o.HealthInterval == n.HealthInterval && o.DialTimeout == n.DialTimeout
}

func sameLimits(o, n config.Service) bool {
	return o.MaxStreamsPerPeer == n.MaxStreamsPerPeer && o.MaxStreams == n.MaxStreams &&
		o.StreamsPerSecondPerPeer == n.StreamsPerSecondPerPeer && o.StreamsPerSecond == n.StreamsPerSecond &&
		o.StreamsBurst == n.StreamsBurst && o.BandwidthPerPeer == n.BandwidthPerPeer && o.Bandwidth == n.Bandwidth
}

// applyForwards closes the listeners of removed or changed forwards (their
// streams in progress drain as usual) and opens those of added or changed
// ones. It returns report lines for forwards it could not apply.
func (a *Agent) applyForwards(nc *config.Config, gone map[*client.Client]bool) []string {
	var report []string
	// Close first: a changed forward reopens the same address.
	a.mu.Lock()
	// The forwards of a removed or changed client reopen on its successor.
	current := slices.Clone(a.cfg.Forwards)
	for i, f := range a.forwards {
		if (f.raw != nil && gone[f.raw]) || (f.source != nil && isGone(f.source, gone)) {
			current[i].Mode = "\x00via a client a reload replaced" // matches no new forward
		}
	}
	kept, added := matchForwards(current, nc.Forwards)
	var keep []*forward
	var keepCfg []config.Forward
	for i, f := range a.forwards {
		if kept[i] {
			keep = append(keep, f)
			keepCfg = append(keepCfg, a.cfg.Forwards[i])
			continue
		}
		f.ln.Close()
		a.log.Info("forward closed by reload; its connections in progress continue", "forward", f.ln.Addr().String(), "service", f.service)
	}
	a.forwards, a.cfg.Forwards = keep, keepCfg
	a.mu.Unlock()
	for _, fc := range added {
		f, err := a.buildForward(fc)
		if err != nil {
			report = append(report, fmt.Sprintf("forward %s: not opened: %v", fc.Listen, err))
			a.log.Error("reload: forward not opened", "forward", string(fc.Listen), "err", err)
			continue
		}
		a.mu.Lock()
		if a.draining.Load() {
			a.mu.Unlock()
			f.ln.Close()
			continue
		}
		a.forwards = append(a.forwards, f)
		a.cfg.Forwards = append(a.cfg.Forwards, fc)
		if ctx := a.runCtx; ctx != nil {
			a.extra.Add(1)
			go func() {
				defer a.extra.Done()
				f.serve(ctx)
			}()
			a.log.Info("forward listening", "forward", f.ln.Addr().String(), "via", f.via, "service", f.service)
		}
		a.mu.Unlock()
	}
	return report
}

func isGone(src tunnelSource, gone map[*client.Client]bool) bool {
	c, ok := src.(*client.Client)
	return ok && gone[c]
}

// startHealth runs svc's health checks until ctx ends or the service is
// replaced.
func (a *Agent) startHealth(ctx context.Context, svc *service) {
	ts := svc.targets
	if ts.health <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	svc.stopHealth = cancel
	timeout := min(svc.dialTimeout, ts.health)
	a.extra.Go(func() { ts.run(ctx, a.opts.Dial, timeout) })
}
