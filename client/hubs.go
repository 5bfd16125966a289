package client

// A pool of hubs (strategy = "all"): the client keeps one tunnel to each of
// Hubs distinct hubs, so a reverse forward on any hub reaches this site and
// losing a hub costs only the streams on its tunnel.
//
// The hubs may be listed one by one in servers, or sit behind a TCP load
// balancer that servers names once. Either way the client cannot trust an
// address to say which hub answered, so it tells hubs apart by their
// public key: every hub of a pool has its own key pair (and certificate,
// which may carry the same name). Each slot dials until it reaches a hub
// that no other slot holds; a tunnel to a hub already held is closed at
// once and the slot tries again after its backoff (backoff_min doubling
// up to backoff_max, with jitter), for as long as the client runs. A load
// balancer that always sends this site to the same hub (source hashing,
// sticky sessions) therefore leaves the site with one tunnel and the
// other slots retrying: use round-robin or least-connections balancing.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/postern-tunnel/postern/tunnel"
)

// errHubHeld is a dial that reached a hub another slot of the same client
// already holds a tunnel to.
var errHubHeld = errors.New("reached a hub this client already holds a tunnel to")

// slotCount is the number of tunnels Run keeps up.
func (c *Client) slotCount() int {
	if c.Strategy != All {
		return c.Parallel
	}
	if c.Hubs > 0 {
		return c.Hubs
	}
	return len(c.Servers)
}

// HubKey names the hub at the other end of t: the SHA-256 of its public
// key (SubjectPublicKeyInfo), so a hub that renews its certificate with
// the same key stays the same hub. A tunnel without a peer certificate
// has no key and is named by its remote address.
func HubKey(t *tunnel.Tunnel) string {
	if t.Peer == nil {
		return "addr:" + t.RemoteAddr().String()
	}
	sum := sha256.Sum256(t.Peer.RawSubjectPublicKeyInfo)
	return "spki:" + hex.EncodeToString(sum[:])
}

// claim records that slot holds t's hub. With All it closes t and returns
// errHubHeld if another slot holds that hub already; with any other
// strategy it accepts every tunnel.
func (c *Client) claim(slot int, t *tunnel.Tunnel) error {
	if c.Strategy != All {
		return nil
	}
	key := HubKey(t)
	c.mu.Lock()
	other := -1
	for i, k := range c.held {
		if i != slot && k == key {
			other = i
			break
		}
	}
	if other < 0 {
		c.held[slot] = key
	}
	c.mu.Unlock()
	if other < 0 {
		return nil
	}
	t.Close()
	return fmt.Errorf("%w (%s, held by tunnel %d of %d)", errHubHeld, shortKey(key), other+1, len(c.held))
}

// HubsHeld is the number of distinct hubs this client holds a tunnel to.
func (c *Client) HubsHeld() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.held {
		if k != "" {
			n++
		}
	}
	return n
}

// logRetry says that slot will dial again after wait. Reaching a hub that
// is already held is routine behind a load balancer: it is logged at info
// level with how many hubs the client holds, not as a warning.
func (c *Client) logRetry(slot int, err error, wait time.Duration) {
	retryIn := wait.Round(time.Millisecond).String()
	if errors.Is(err, errHubHeld) {
		c.Log.Info("tunnel reached a hub already held; dialing again", "tunnel", c.Name,
			"hubs_held", c.HubsHeld(), "hubs", c.slotCount(), "err", err, "retry_in", retryIn)
		return
	}
	c.Log.Warn("tunnel not connected; retrying", "tunnel", c.Name, "err", err, "retry_in", retryIn)
}

func shortKey(key string) string {
	if len(key) > 5+16 {
		return key[:5+16]
	}
	return key
}

// poolWhole reports, with All, whether every slot has a live tunnel. The
// caller holds c.mu.
func (c *Client) poolWhole() bool {
	if c.Strategy != All {
		return false
	}
	for _, t := range c.slots {
		if t == nil || t.Closed() {
			return false
		}
	}
	return true
}
