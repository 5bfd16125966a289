// Package agent runs one Postern agent from its config: tunnel servers and
// clients, forwards (plaintext listeners that open streams) and services
// (targets the peer may reach), with a drain on shutdown.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/workers"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/server"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
)

// Options are the agent's ways of reaching the network, replaceable in
// tests. Zero values use the net package.
type Options struct {
	Listen func(network, addr string) (net.Listener, error)
	Dial   client.DialFunc
}

// Agent is a running agent. New binds every listener (so "address in use"
// shows at start), Run serves until its context ends and then drains.
type Agent struct {
	cfg  *config.Config
	log  *slog.Logger
	opts Options
	tun  tunnel.Options

	// listenPlain binds forwards and dialPlain reaches targets: opts's, with
	// every connection armed to close with a reset (relay.ArmReset).
	listenPlain func(network, addr string) (net.Listener, error)
	dialPlain   client.DialFunc

	// setup runs the goroutines that set a connection up (a forward's
	// stream open, a stream the peer opened): kept goroutines, whose
	// stacks have grown already. The relay itself runs on a fresh one.
	setup *workers.Pool

	services map[string]*service
	clients  map[string]*client.Client
	// rawClients are the [[client]]s with mux = false: no tunnel, one TLS
	// connection per forwarded connection.
	rawClients map[string]bool
	servers    []*listenedServer
	forwards   []*forward

	draining atomic.Bool
	metrics  *metrics
	admin    net.Listener // [admin] endpoint, or nil
	acme     *acmeState   // [acme] certificate upkeep, or nil (acme.go)
	enroll   *enrollHub   // [ca]: redeems invitations on the [[server]]s, or nil (enroll.go)
	streams  inflight     // every stream in progress, both kinds
	raws     rawConns     // live mux = false connections, rechecked like tunnels

	// relayCtx ends every relay at the drain deadline.
	relayCtx    context.Context
	abortRelays context.CancelCauseFunc
	// tunnelCtx ends every tunnel when the agent has drained.
	tunnelCtx    context.Context
	closeTunnels context.CancelFunc

	mu             sync.Mutex
	tunnels        map[*tunnel.Tunnel]struct{} // accepted tunnels, closed at the end
	peerTunnels    map[string]int              // accepted tunnels per peer identity (identity.Describe), for max_tunnels_per_peer
	tunnelsChanged tunnel.Changes              // wakes reverse forwards waiting for a peer

	certs certWatch // certificate reload, revocation and expiry upkeep (reload.go)
	renew renewal   // certificate renewal over tunnels and by the local [ca] (renew.go, renew_sign.go)
	crls  crlPush   // the [ca]'s CRL pushed to peers; CRLs peers pushed here (crlpush.go)

	obs     observe      // per-partner metrics and stream totals (access.go)
	started time.Time    // for status
	control net.Listener // the local control socket (control.go), or nil

	// Live reconfiguration (reconfig.go): runCtx is Run's context (under
	// mu), extra waits for forwards and health checks a reload started,
	// live are the inbound streams a reload may cut.
	runCtx     context.Context
	extra      sync.WaitGroup
	live       liveStreams
	clientStop map[string]context.CancelFunc // per [[client]], under mu
}

// setupIdle is how long a setup goroutine waits for the next connection
// before it exits.
const setupIdle = 5 * time.Second

type listenedServer struct {
	srv *server.Server
	ln  net.Listener
}

// New builds the agent and binds its listeners. On error nothing is left
// open.
func New(cfg *config.Config, log *slog.Logger, opts Options) (_ *Agent, err error) {
	// The plaintext side's connections (a forward's applications, a
	// service's targets) are armed to close with a reset from the start;
	// relay.Listen and relay.Dial do it with the fewest system calls.
	listenPlain, dialPlain := relay.Listen, client.DialFunc(relay.Dial)
	if opts.Listen == nil {
		opts.Listen = net.Listen
	} else {
		listen := opts.Listen
		listenPlain = func(network, addr string) (net.Listener, error) {
			ln, err := listen(network, addr)
			if err != nil {
				return nil, err
			}
			return relay.ArmAccepted(ln), nil
		}
	}
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	} else {
		dialPlain = relay.ArmDialed(opts.Dial)
	}
	// a, not the named result, is what the cleanup below sees: the result
	// is nil on every error return.
	a := &Agent{
		cfg: cfg, log: log, opts: opts, listenPlain: listenPlain, dialPlain: dialPlain,
		services:   map[string]*service{},
		clients:    map[string]*client.Client{},
		rawClients: map[string]bool{},
		tunnels:    map[*tunnel.Tunnel]struct{}{},
		tun:        tunnel.OptionsOf(cfg.Tunnel),
		setup:      workers.New(setupIdle),
		started:    time.Now(),
	}
	a.peerTunnels = map[string]int{}
	a.tun.Go = a.setup.Go
	a.relayCtx, a.abortRelays = context.WithCancelCause(context.Background())
	a.tunnelCtx, a.closeTunnels = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.closeListeners()
			if a.admin != nil {
				a.admin.Close()
			}
			if a.control != nil {
				a.control.Close()
			}
		}
	}()
	if err := errors.Join(CheckIdentities(cfg)...); err != nil {
		return nil, err
	}
	a.metrics = a.newMetrics()
	if cfg.Admin.Listen != "" {
		if a.admin, err = opts.Listen("tcp", string(cfg.Admin.Listen)); err != nil {
			return nil, fmt.Errorf("%s: admin listen %s: %w", a.where(0), cfg.Admin.Listen, err)
		}
	}
	a.listenControl()
	if err := a.buildServices(); err != nil {
		return nil, err
	}
	if err := a.buildClients(); err != nil {
		return nil, err
	}
	if err := a.setupACME(); err != nil {
		return nil, err
	}
	if err := a.setupEnroll(); err != nil {
		return nil, err
	}
	if err := a.buildServers(); err != nil {
		return nil, err
	}
	if err := a.buildForwards(); err != nil {
		return nil, err
	}
	a.observe() // metric labels: from the config at start; a reload recomputes them (relabel)
	return a, nil
}

func (a *Agent) where(line int) string {
	if line > 0 {
		return fmt.Sprintf("config %s:%d", a.cfg.Path, line)
	}
	return "config " + a.cfg.Path
}

func (a *Agent) buildServices() error {
	for _, sc := range a.cfg.Services {
		svc, err := a.buildService(sc)
		if err != nil {
			return err
		}
		a.services[sc.Name] = svc
	}
	return nil
}

func (a *Agent) buildService(sc config.Service) (*service, error) {
	allow, err := identity.ParseList(sc.Allow)
	if err != nil {
		return nil, fmt.Errorf("%s: service %q: %w", a.where(sc.Line), sc.Name, err)
	}
	if len(allow) == 0 {
		a.log.Warn("service has an empty allow list: every stream to it will be refused (default deny)", "service", sc.Name)
	}
	svc := &service{name: sc.Name, targets: newTargetSet(sc, a.log), allow: allow, dialTimeout: sc.DialTimeout.D(), limits: newLimits(sc)}
	switch sc.ProxyProtocol {
	case "v1":
		svc.proxyProtocol = 1
	case "v2":
		svc.proxyProtocol = 2
	}
	return svc, nil
}

func loadCreds(where string, t config.TLS) (*trust.Credentials, error) {
	m, err := trust.LoadMaterial(trust.FilesOf(t))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return trust.NewCredentials(m), nil
}

func (a *Agent) buildClients() error {
	for _, cc := range a.cfg.Clients {
		c, err := a.buildClient(cc)
		if err != nil {
			return err
		}
		a.clients[cc.Name] = c
		if !*cc.Mux {
			a.rawClients[cc.Name] = true
		}
	}
	return nil
}

func (a *Agent) buildClient(cc config.Client) (*client.Client, error) {
	creds, err := loadCreds(fmt.Sprintf("%s: client %q", a.where(cc.Line), cc.Name), cc.TLS)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := clientTLSConfig(creds, cc.Peer)
	if err != nil {
		return nil, fmt.Errorf("%s: client %q: %w", a.where(cc.Line), cc.Name, err)
	}
	servers := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		servers[i] = string(s)
	}
	proxy, err := client.NewProxy(cc, nil) // nil: no proxy, Dial returns a.opts.Dial
	if err != nil {
		return nil, fmt.Errorf("%s: client %q: %w", a.where(cc.Line), cc.Name, err)
	}
	return &client.Client{
		Name: cc.Name, Servers: servers, ServerName: cc.ServerName,
		Creds: creds, TLSConfig: tlsConfig, Dial: proxy.Dial(a.opts.Dial), Proxy: proxy, DialTimeout: cc.DialTimeout.D(),
		BackoffMin: cc.BackoffMin.D(), BackoffMax: cc.BackoffMax.D(),
		Parallel: cc.Tunnels, Strategy: cc.Strategy, Hubs: cc.Hubs, MaxLifetime: cc.MaxTunnelLifetime.D(),
		Options: a.tun, Log: a.log,
		Handle: a.serveTunnel,
	}, nil
}

func (a *Agent) buildServers() error {
	for _, sc := range a.cfg.Servers {
		where := fmt.Sprintf("%s: server %s", a.where(sc.Line), sc.Listen)
		creds, err := loadCreds(where, sc.TLS)
		if err != nil {
			return err
		}
		ln, err := a.opts.Listen("tcp", string(sc.Listen))
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		peers, err := identity.ParseList(sc.Peer)
		if err != nil {
			ln.Close()
			return fmt.Errorf("%s: peer: %w", where, err)
		}
		srv := &server.Server{
			Creds: creds, Peer: peers, HandshakeTimeout: sc.HandshakeTimeout.D(), HelloTimeout: sc.HelloTimeout.D(),
			MaxHandshakes: sc.MaxHandshakes, MaxHandshakesPerAddress: sc.MaxHandshakesPerAddress,
			Options: a.tun, Log: a.log,
			Handle: a.acceptedTunnel, Refused: a.metrics.countRefused,
			Enroll: a.enrollment(), DeferAccept: true,
		}
		if !*sc.Mux {
			if a.services[sc.Service] == nil {
				ln.Close()
				return fmt.Errorf("%s: service %q: no [[service]] has that name", where, sc.Service)
			}
			name := sc.Service
			srv.Raw = func(c *tls.Conn) {
				// Looked up per connection: a reload may replace the service.
				svc := a.service(name)
				if svc == nil {
					resetTLS(c)
					return
				}
				a.serveRaw(c, svc, srv.Creds)
			}
		}
		a.servers = append(a.servers, &listenedServer{srv: srv, ln: ln})
	}
	return nil
}

func (a *Agent) buildForwards() error {
	for _, fc := range a.cfg.Forwards {
		f, err := a.buildForward(fc)
		if err != nil {
			return err
		}
		a.forwards = append(a.forwards, f)
	}
	return nil
}

func (a *Agent) buildForward(fc config.Forward) (*forward, error) {
	ln, err := a.listenForward(fc)
	if err != nil {
		return nil, fmt.Errorf("%s: forward %s: %w", a.where(fc.Line), fc.Listen, err)
	}
	f := &forward{agent: a, ln: ln, addr: ln.Addr().String(), service: fc.Service, via: fc.Via, wait: fc.TunnelWait.D()}
	switch c := a.clients[fc.Via]; {
	case c != nil && a.rawClients[fc.Via]:
		f.raw = c
	case c != nil:
		f.source = c
	default:
		// A reverse forward: via names a peer identity.
		pattern, err := identity.Parse(fc.Via)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("%s: forward %s: via %q: %w", a.where(fc.Line), fc.Listen, fc.Via, err)
		}
		f.source = &peerSource{agent: a, pattern: pattern, absence: absence{wait: f.wait, since: time.Now()}}
	}
	return f, nil
}

// ForwardAddrs are the bound addresses of the forwards, in config order.
func (a *Agent) ForwardAddrs() []net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]net.Addr, len(a.forwards))
	for i, f := range a.forwards {
		out[i] = f.ln.Addr()
	}
	return out
}

// ServerAddrs are the bound addresses of the tunnel servers, in config order.
func (a *Agent) ServerAddrs() []net.Addr {
	out := make([]net.Addr, len(a.servers))
	for i, s := range a.servers {
		out[i] = s.ln.Addr()
	}
	return out
}

// Run serves until ctx is done, then drains: it stops accepting, lets
// streams in flight finish for up to shutdown_timeout, aborts the rest and
// closes the tunnels.
func (a *Agent) Run(ctx context.Context) error {
	defer a.setup.Close()
	defer a.startCertificateWatch(ctx)()
	defer a.startCRLPush(ctx)()
	defer a.startRenewal(ctx)()
	defer a.startACME(ctx)()
	defer a.startHealthChecks(ctx)()
	for _, s := range a.servers {
		a.log.Info("tunnel server listening", "listen", s.ln.Addr().String())
	}
	a.mu.Lock()
	a.runCtx = ctx
	forwards := slices.Clone(a.forwards)
	clients, rawClients := a.clients, a.rawClients
	a.mu.Unlock()
	for _, f := range forwards {
		a.log.Info("forward listening", "forward", f.ln.Addr().String(), "via", f.via, "service", f.service)
	}
	var wg sync.WaitGroup
	for name, c := range clients {
		if rawClients[name] {
			continue // no tunnel to keep: it dials per forwarded connection
		}
		wg.Add(1)
		ctx := a.clientContext(name)
		go func() {
			defer wg.Done()
			c.Run(ctx)
		}()
	}
	for _, s := range a.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.srv.Serve(ctx, s.ln)
		}()
	}
	for _, f := range forwards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.serve(ctx)
		}()
	}
	a.log.Info("agent running", "agent", a.name(), "servers", len(a.servers), "clients", len(clients),
		"forwards", len(forwards), "services", len(a.services))
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	if a.admin != nil {
		a.log.Info("admin endpoint listening (/healthz, /readyz, /metrics, /status, /reload)", "listen", a.admin.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveAdmin(adminCtx)
		}()
	}
	if a.control != nil {
		a.log.Info("control socket listening (postern status, postern reload)", "socket", a.control.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveControl(adminCtx)
		}()
	}
	<-ctx.Done()
	a.drain()
	stopAdmin() // /readyz says "shutting down" while the agent drains
	wg.Wait()
	a.extra.Wait()
	return nil
}

func (a *Agent) drain() {
	a.draining.Store(true)
	a.closeListeners()
	timeout := a.cfg.ShutdownTimeout.D()
	a.log.Info("agent stopping: no new connections; waiting for streams in flight", "agent", a.name(), "wait", timeout.String())
	select {
	case <-a.streams.Idle():
	case <-time.After(timeout):
		a.log.Warn("shutdown_timeout reached; aborting the streams still open", "agent", a.name(), "wait", timeout.String())
		a.abortRelays(errShutdownDeadline)
		<-a.streams.Idle()
	}
	a.abortRelays(errShutdownDeadline)
	a.stopEnroll()
	a.closeTunnels()
	a.mu.Lock()
	for t := range a.tunnels {
		t.Close()
	}
	a.mu.Unlock()
	a.log.Info("agent stopped", "agent", a.name())
}

func (a *Agent) closeListeners() {
	for _, s := range a.servers {
		s.ln.Close()
	}
	a.mu.Lock()
	for _, f := range a.forwards {
		f.ln.Close()
	}
	a.mu.Unlock()
	if a.acme != nil {
		a.acme.ln.Close()
	}
}

func (a *Agent) name() string {
	if a.cfg.Name != "" {
		return a.cfg.Name
	}
	h, _ := os.Hostname()
	return h
}

// acceptedTunnel owns a tunnel a server accepted until it ends, and
// returns once it is served.
func (a *Agent) acceptedTunnel(t *tunnel.Tunnel) {
	who := identity.Describe(t.Peer)
	a.mu.Lock()
	if a.tunnelCtx.Err() != nil {
		a.mu.Unlock()
		t.Close()
		return
	}
	if n := a.peerTunnels[who]; n >= a.cfg.Tunnel.MaxTunnelsPerPeer && t.Peer != nil {
		a.mu.Unlock()
		a.log.Warn("tunnel refused: too many tunnels from this peer", "peer", who,
			"peer_addr", t.RemoteAddr().String(), "tunnels", n, "max_tunnels_per_peer", a.cfg.Tunnel.MaxTunnelsPerPeer)
		t.CloseFor("too many tunnels from this peer (max_tunnels_per_peer)")
		return
	}
	a.tunnels[t] = struct{}{}
	if t.Peer != nil {
		a.peerTunnels[who]++
	}
	a.tunnelsChanged.Notify()
	a.mu.Unlock()
	log := a.log.With("peer_addr", t.RemoteAddr().String(), "peer", who)
	log.Info("tunnel accepted")
	// No goroutine stays with the tunnel: what follows runs once it ended.
	a.serveTunnelThen(t, func() {
		a.mu.Lock()
		delete(a.tunnels, t)
		if t.Peer != nil {
			if a.peerTunnels[who]--; a.peerTunnels[who] <= 0 {
				delete(a.peerTunnels, who)
			}
		}
		a.peerLeft(t)
		a.tunnelsChanged.Notify()
		a.mu.Unlock()
		log.Info("tunnel closed")
	})
}

// errShutdownDeadline cuts the streams still open when shutdown_timeout
// has passed.
var errShutdownDeadline = errors.New("agent stopping: transfer cut at the shutdown deadline (shutdown_timeout)")

// errDraining is the reason given to peers while the agent stops.
var errDraining = errors.New("agent is shutting down")
