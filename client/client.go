// Package client dials and keeps up the tunnels of one [[client]]: servers in
// failover (or round-robin) order, N parallel tunnels or one to each hub of
// a pool (strategy "all", see hubs.go), reconnect with
// exponential backoff and jitter, return to the preferred server, and
// make-before-break renewal after max_tunnel_lifetime.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/rawio"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
)

// DialFunc opens a TCP connection (net.Dialer.DialContext in production).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Strategies for choosing a server.
const (
	Ordered    = "ordered"     // the first reachable server; return to it when it is back
	RoundRobin = "round-robin" // spread tunnels over the servers; rotate on reconnect
	All        = "all"         // one tunnel to each of Hubs distinct hubs (see hubs.go)
)

// Client keeps Parallel tunnels up while Run runs. Set the exported fields
// (the values come from the config, where their defaults live; only
// TLSConfig and Handle may be nil), then call Run once; Tunnel and Tunnels
// may be called from any goroutine.
type Client struct {
	Name       string
	Servers    []string // in order of preference
	ServerName string   // name the server certificate must carry; "" = host of the address
	Creds      *trust.Credentials
	// TLSConfig, if set, builds the TLS configuration for a dial (it may
	// add checks such as peer pins); nil uses trust.ClientConfig.
	TLSConfig   func(serverName string) *tls.Config
	Dial        DialFunc
	Proxy       *Proxy        // for log lines only: Dial already goes through it; nil = direct
	DialTimeout time.Duration // TCP connect plus TLS handshake plus first ping
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	Parallel    int    // parallel tunnels (config: tunnels)
	Strategy    string // Ordered, RoundRobin or All
	// Hubs is, with All, how many distinct hubs to hold a tunnel to (one
	// each, in place of Parallel); 0 means one per server. Behind a load
	// balancer, servers is one address and Hubs the number of hubs behind it.
	Hubs        int
	MaxLifetime time.Duration // renew each tunnel this often; 0 = never
	Options     tunnel.Options
	Log         *slog.Logger
	// Handle runs for each established tunnel on its own goroutine (the
	// agent accepts the peer's streams there) until the tunnel ends.
	Handle func(t *tunnel.Tunnel)

	mu      sync.Mutex
	slots   []*tunnel.Tunnel // tunnel taking new streams, per slot
	held    []string         // with All: the hub key each slot holds (hubKey), "" = none
	all     map[*tunnel.Tunnel]struct{}
	lastErr error
	changed tunnel.Changes // whenever slots change
	retry   tunnel.Changes // RetryNow
}

// ErrNoTunnel is returned by Tunnel when no tunnel came up in time.
var ErrNoTunnel = errors.New("no tunnel up")

// Run keeps the tunnels up until ctx is done, then closes them.
func (c *Client) Run(ctx context.Context) error {
	n := c.slotCount()
	c.mu.Lock()
	c.slots = make([]*tunnel.Tunnel, n)
	c.held = make([]string, n)
	c.all = map[*tunnel.Tunnel]struct{}{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runSlot(ctx, i)
		}()
	}
	wg.Wait()
	return nil
}

// runSlot keeps slot i's tunnel up.
func (c *Client) runSlot(ctx context.Context, slot int) {
	backoff := c.BackoffMin
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c.mu.Lock()
		retry := c.retry.Wait()
		c.mu.Unlock()
		t, idx, err := c.connect(ctx, slot, c.order(slot, attempt), -1)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setErr(err)
			wait := jitter(backoff)
			c.logRetry(slot, err, wait)
			select {
			case <-time.After(wait):
				backoff = min(2*backoff, c.BackoffMax)
			case <-retry:
				c.Log.Info("tunnel: new certificate material; retrying now", "tunnel", c.Name)
				backoff = c.BackoffMin
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = c.BackoffMin
		c.serve(ctx, slot, t, idx)
	}
}

// serve publishes t in its slot and keeps the slot's tunnel up until one is
// lost or ctx is done. Along the way it moves back to a more preferred
// server once that is reachable again, and renews the tunnel after
// MaxLifetime; both are make-before-break: the old tunnel stops taking new
// streams and closes once its streams have finished.
func (c *Client) serve(ctx context.Context, slot int, t *tunnel.Tunnel, idx int) {
	c.publish(slot, t)
	for {
		next, nextIdx, why := c.watch(ctx, slot, t, idx)
		if next == nil {
			return
		}
		c.publish(slot, next) // new streams go to next from here on
		c.Log.Info("tunnel replaced; the old tunnel closes when its streams end", "tunnel", c.Name, "addr", c.Servers[nextIdx], "reason", why)
		c.retire(t)
		t, idx = next, nextIdx
	}
}

// watch waits until t ends (nil result) or a replacement is up, and says
// why it was made.
func (c *Client) watch(ctx context.Context, slot int, t *tunnel.Tunnel, idx int) (*tunnel.Tunnel, int, string) {
	var prefer, renew <-chan time.Time
	if c.Strategy == Ordered && idx > 0 {
		tick := time.NewTicker(c.preferInterval())
		defer tick.Stop()
		prefer = tick.C
	}
	renewTimer := time.NewTimer(jitterUp(c.MaxLifetime))
	defer renewTimer.Stop()
	if c.MaxLifetime > 0 {
		renew = renewTimer.C
	}
	for {
		select {
		case <-t.Done():
			c.lost(slot, t)
			return nil, -1, ""
		case <-ctx.Done():
			c.unpublish(slot, t, errors.New("agent stopping"))
			t.Close()
			return nil, -1, ""
		case <-prefer:
			// Only servers before the current one are worth a try.
			if n, i, err := c.connect(ctx, slot, c.order(slot, 0), idx); err == nil {
				return n, i, "a server listed earlier is reachable again; new streams move to it"
			}
		case <-renew:
			n, i, err := c.connect(ctx, slot, c.order(slot, 0), -1)
			if err != nil {
				c.Log.Warn("tunnel not renewed after max_tunnel_lifetime; keeping the current tunnel for now", "tunnel", c.Name, "err", err)
				renewTimer.Reset(c.BackoffMax)
				continue
			}
			return n, i, "renewed after max_tunnel_lifetime"
		}
	}
}

// connect tries the servers in order and returns the first tunnel that
// completes its handshake and answers a ping, with its index in Servers.
// With before >= 0 only servers with a smaller index are tried. With All,
// a tunnel to a hub that another slot already holds is closed and counts
// as a failure (errHubHeld).
func (c *Client) connect(ctx context.Context, slot int, order []int, before int) (*tunnel.Tunnel, int, error) {
	var msgs []string
	held := 0
	for _, i := range order {
		if before >= 0 && i >= before {
			continue
		}
		t, err := c.dial(ctx, c.Servers[i])
		if err == nil {
			err = c.claim(slot, t)
		}
		if err == nil {
			return t, i, nil
		}
		if errors.Is(err, errHubHeld) {
			held++
		}
		msgs = append(msgs, fmt.Sprintf("%s: %v", c.Servers[i], err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(msgs) == 0 {
		return nil, -1, errors.New("no server to try")
	}
	err := errors.New(strings.Join(msgs, "; "))
	if held == len(msgs) {
		err = fmt.Errorf("%w: %v", errHubHeld, err)
	}
	return nil, -1, err
}

// order is the sequence of server indexes slot tries on its attempt-th
// connection.
func (c *Client) order(slot, attempt int) []int {
	n := len(c.Servers)
	out := make([]int, n)
	start := 0
	if c.Strategy == RoundRobin || c.Strategy == All {
		start = (slot + attempt) % n
	}
	for i := range out {
		out[i] = (start + i) % n
	}
	return out
}

func (c *Client) dial(ctx context.Context, addr string) (*tunnel.Tunnel, error) {
	// One dial_timeout covers the connect, the handshake and the first ping.
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	tc, err := c.dialTLS(dctx, addr, true)
	if err != nil {
		return nil, err
	}
	t, err := tunnel.New(tc, true, c.Options)
	if err != nil {
		tc.Close()
		return nil, err
	}
	t.Name = c.Name
	if err := t.Confirm(dctx); err != nil {
		t.Close()
		if errors.Is(err, tunnel.ErrNoAnswer) {
			return nil, fmt.Errorf("the server completed the TLS handshake but did not answer the first ping within dial_timeout (%s): an overloaded or stuck agent, or not a Postern agent", c.DialTimeout)
		}
		return nil, c.refusalError(ctx, err, addr, true)
	}
	attrs := []any{"tunnel", c.Name, "addr", addr, "peer", identity.Describe(t.Peer), "tls", tls.VersionName(tc.ConnectionState().Version)}
	if via := c.Proxy.Describe(addr); via != "" {
		attrs = append(attrs, "via", via)
	}
	c.Log.Info("tunnel connected", attrs...)
	return t, nil
}

// dialTLS connects to addr and completes a verified TLS handshake. With
// mux it insists on the Postern ALPN; without it the peer may be any
// mutual-TLS endpoint (stunnel, nginx, HAProxy).
func (c *Client) dialTLS(ctx context.Context, addr string, mux bool) (*tls.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	conn, err := c.Dial(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", UnwrapOp(err))
	}
	cfg := c.tlsConfig(addr, mux)
	if mux {
		conn = tunnel.WrapConn(rawio.Wrap(conn))
	} else {
		conn = relay.WatchEOF(rawio.Wrap(conn)) // so relay.Raw can tell close_notify from a cut
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		conn.Close()
		return nil, c.refusalError(ctx, err, addr, mux)
	}
	if mux {
		if err := trust.CheckALPN(tc.ConnectionState()); err != nil {
			tc.Close()
			return nil, err
		}
	}
	return tc, nil
}

// tlsConfig is the TLS configuration for a dial to addr.
func (c *Client) tlsConfig(addr string, mux bool) *tls.Config {
	name := c.ServerName
	if name == "" {
		name = ServerNameOf(addr)
	}
	var cfg *tls.Config
	if c.TLSConfig != nil {
		cfg = c.TLSConfig(name)
	} else {
		cfg = trust.ClientConfig(c.Creds, name)
	}
	if !mux {
		cfg = cfg.Clone()
		cfg.NextProtos = nil
	}
	return cfg
}

// DialRaw opens one verified TLS connection to the first reachable
// server, for a client with mux = false: each forwarded connection gets its
// own TLS connection and carries raw bytes.
func (c *Client) DialRaw(ctx context.Context) (*tls.Conn, error) {
	var msgs []string
	for _, i := range c.order(0, 0) {
		tc, err := c.dialTLS(ctx, c.Servers[i], false)
		if err == nil {
			return tc, nil
		}
		msgs = append(msgs, fmt.Sprintf("%s: %v", c.Servers[i], err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("tunnel %s: %s", c.Name, strings.Join(msgs, "; "))
}

// RetryNow makes every slot that waits to reconnect try again at once, with
// its backoff back at backoff_min: new certificate material may be what the
// server refused us for.
func (c *Client) RetryNow() {
	c.mu.Lock()
	c.retry.Notify()
	c.mu.Unlock()
}

// Tunnel returns the least loaded live tunnel, waiting for one until ctx
// is done.
func (c *Client) Tunnel(ctx context.Context) (*tunnel.Tunnel, error) {
	for {
		c.mu.Lock()
		best := tunnel.LeastLoaded(c.slots, nil)
		ch := c.changed.Wait()
		c.mu.Unlock()
		if best != nil {
			return best, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			lastErr := c.lastErr
			c.mu.Unlock()
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %v", ErrNoTunnel, lastErr)
			}
			return nil, ErrNoTunnel
		}
	}
}

// Tunnels returns every live tunnel of this client, including ones that no
// longer take new streams but still carry some.
func (c *Client) Tunnels() []*tunnel.Tunnel {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*tunnel.Tunnel, 0, len(c.all))
	for t := range c.all {
		out = append(out, t)
	}
	return out
}

// publish makes t its slot's tunnel for new streams and starts handling
// the peer's streams on it.
func (c *Client) publish(slot int, t *tunnel.Tunnel) {
	c.mu.Lock()
	c.slots[slot] = t
	c.all[t] = struct{}{}
	c.lastErr = nil
	c.changed.Notify()
	whole := c.poolWhole()
	c.mu.Unlock()
	if whole {
		c.Log.Info("tunnels up to every hub", "tunnel", c.Name, "hubs", len(c.slots))
	}
	go func() {
		if c.Handle != nil {
			c.Handle(t)
		}
	}()
	go func() {
		<-t.Done()
		c.mu.Lock()
		delete(c.all, t)
		c.mu.Unlock()
	}()
}

func (c *Client) unpublish(slot int, t *tunnel.Tunnel, err error) {
	c.mu.Lock()
	if c.slots[slot] == t {
		c.slots[slot] = nil
		c.held[slot] = ""
	}
	if t.Closed() {
		delete(c.all, t)
	}
	c.lastErr = err
	c.changed.Notify()
	c.mu.Unlock()
}

func (c *Client) lost(slot int, t *tunnel.Tunnel) {
	cause := t.CloseReason()
	switch {
	case cause != "":
	case t.KeepaliveFailed():
		cause = fmt.Sprintf("no answer to a keepalive ping within keepalive_timeout (%s): the server or the network between is down", c.Options.KeepaliveTimeout)
	default:
		cause = describeLoss(t.Err(), c.Creds)
	}
	c.unpublish(slot, t, fmt.Errorf("tunnel lost: %s", cause))
	c.Log.Warn("tunnel lost; reconnecting", "tunnel", c.Name, "addr", t.RemoteAddr().String(), "reason", cause)
}

// retire stops t from taking new streams (ours, and with a GoAway the
// peer's) and closes it once its streams have ended.
func (c *Client) retire(t *tunnel.Tunnel) {
	t.Retire()
	go func() {
		// Streams the peer opened before it read the GoAway are still on
		// their way: its answer to a ping, sent once it has read the
		// GoAway, follows them, and the tunnel is idle only when it has
		// been so for a whole tick after that answer (an open the peer
		// had queued may still be behind the answer).
		ctx, cancel := context.WithTimeout(context.Background(), retireConfirmWait)
		err := t.Confirm(ctx)
		cancel()
		if err != nil {
			t.Close()
			return
		}
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for quiet := 0; ; { // checks in a row that found no stream
			if t.Streams() > 0 {
				quiet = 0
			} else if quiet++; quiet == 2 {
				break
			}
			select {
			case <-t.Done():
				return
			case <-tick.C:
			}
		}
		t.Close()
	}()
}

// retireConfirmWait bounds the wait for the retired tunnel's peer to answer
// the ping that follows the GoAway.
const retireConfirmWait = 10 * time.Second

func (c *Client) preferInterval() time.Duration {
	return min(max(c.BackoffMax, time.Second), 30*time.Second)
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// jitter spreads d over [d/2, d) so that many clients reconnecting after a
// hub restart do not arrive at once.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// jitterUp spreads d over [d, 1.1d) so parallel tunnels do not renew at once.
func jitterUp(d time.Duration) time.Duration {
	return d + rand.N(d/10+1)
}

// UnwrapOp drops the "dial tcp ADDR: connect:" wrapping a failed dial
// repeats and the caller's own message already says, leaving "connection
// refused". A *ProxyError already says it in its own words.
func UnwrapOp(err error) error {
	if pe, ok := errors.AsType[*ProxyError](err); ok {
		return pe
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// describeLoss says why an established tunnel ended, from the first error
// its connection read.
func describeLoss(err error, creds *trust.Credentials) string {
	var ne net.Error
	switch {
	case err == nil:
		return "connection closed"
	case errors.Is(err, net.ErrClosed):
		return "closed by this agent"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the server closed the connection"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	// A TLS alert after the handshake: for example the server rejected our
	// certificate (TLS 1.3 reports that on the first read).
	return creds.Explain(err, trust.SideClient, time.Now())
}
