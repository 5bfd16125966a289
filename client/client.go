// Package client dials and keeps up the tunnel of one [[client]]: servers in
// failover order, reconnect with exponential backoff and jitter.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/tunnel"
)

// DialFunc opens a TCP connection (net.Dialer.DialContext in production).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Client keeps one tunnel up to the first reachable of its servers while Run
// runs. Configure the exported fields, then call Run once; Tunnel may be
// called from any goroutine.
type Client struct {
	Name        string
	Servers     []string // failover order
	ServerName  string   // name the server certificate must carry; "" = host of the address
	Creds       *tunnel.Credentials
	Dial        DialFunc
	DialTimeout time.Duration // TCP connect plus TLS handshake plus first ping
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	Options     tunnel.Options
	Log         *slog.Logger
	// Handle runs for each established tunnel on its own goroutine (the
	// agent accepts the peer's streams there) until the tunnel ends.
	Handle func(t *tunnel.Tunnel)

	mu      sync.Mutex
	cur     *tunnel.Tunnel
	lastErr error
	changed chan struct{} // closed and replaced whenever cur changes
}

// ErrNoTunnel is returned by Tunnel when no tunnel came up in time.
var ErrNoTunnel = errors.New("no tunnel up")

// Run dials and re-dials until ctx is done, then closes the tunnel.
func (c *Client) Run(ctx context.Context) error {
	c.defaults()
	backoff := c.BackoffMin
	for ctx.Err() == nil {
		t, err := c.connect(ctx)
		if err != nil {
			c.setErr(err)
			wait := jitter(backoff)
			c.Log.Warn(fmt.Sprintf("tunnel %s: %v; retrying in %s", c.Name, err, wait.Round(time.Millisecond)))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, c.BackoffMax)
			continue
		}
		backoff = c.BackoffMin
		c.serve(ctx, t)
	}
	return nil
}

// serve publishes t until it ends or ctx is done.
func (c *Client) serve(ctx context.Context, t *tunnel.Tunnel) {
	c.set(t, nil)
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		if c.Handle != nil {
			c.Handle(t)
		}
	}()
	select {
	case <-t.Done():
		cause := "connection closed"
		if err := t.Err(); err != nil {
			cause = tunnel.Explain(err, tunnel.SideClient, c.Creds.Load().CASubjects, time.Now())
		}
		c.set(nil, fmt.Errorf("tunnel lost: %s", cause))
		c.Log.Warn(fmt.Sprintf("tunnel %s (%s): lost: %s; reconnecting", c.Name, t.RemoteAddr(), cause))
	case <-ctx.Done():
		c.set(nil, errors.New("agent stopping"))
		t.Close()
	}
	<-handled
}

// connect tries each server in order and returns the first tunnel that
// completes its handshake and answers a ping.
func (c *Client) connect(ctx context.Context) (*tunnel.Tunnel, error) {
	var msgs []string
	for _, addr := range c.Servers {
		t, err := c.dial(ctx, addr)
		if err == nil {
			return t, nil
		}
		msgs = append(msgs, fmt.Sprintf("%s: %v", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.New(strings.Join(msgs, "; "))
}

func (c *Client) dial(ctx context.Context, addr string) (*tunnel.Tunnel, error) {
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	conn, err := c.Dial(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", unwrapOp(err))
	}
	name := c.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(addr)
	}
	creds := c.Creds.Load()
	tc := tls.Client(conn, tunnel.ClientConfig(c.Creds, name))
	if err := tc.HandshakeContext(dctx); err != nil {
		conn.Close()
		return nil, errors.New(tunnel.Explain(err, tunnel.SideClient, creds.CASubjects, time.Now()))
	}
	if err := tunnel.CheckALPN(tc.ConnectionState()); err != nil {
		tc.Close()
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
		return nil, errors.New(tunnel.Explain(err, tunnel.SideClient, creds.CASubjects, time.Now()))
	}
	c.Log.Info(fmt.Sprintf("tunnel %s: connected to %s", c.Name, addr),
		"server", tunnel.Subject(t.Peer), "tls", tls.VersionName(tc.ConnectionState().Version))
	return t, nil
}

// Tunnel returns the live tunnel, waiting for one until ctx is done.
func (c *Client) Tunnel(ctx context.Context) (*tunnel.Tunnel, error) {
	for {
		c.mu.Lock()
		t, ch, lastErr := c.cur, c.changedCh(), c.lastErr
		c.mu.Unlock()
		if t != nil {
			select {
			case <-t.Done():
			default:
				return t, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %v", ErrNoTunnel, lastErr)
			}
			return nil, ErrNoTunnel
		}
	}
}

func (c *Client) set(t *tunnel.Tunnel, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = t
	c.lastErr = err
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// changedCh must be called with mu held.
func (c *Client) changedCh() chan struct{} {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

func (c *Client) defaults() {
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 200 * time.Millisecond
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(30*time.Second, c.BackoffMin)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// jitter spreads d over [d/2, d) so that many clients reconnecting after a
// hub restart do not arrive at once.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
