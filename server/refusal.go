package server

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/wire"
)

// answerRefusal serves a refusal-reason connection (docs/protocol.md,
// "Refusal reasons"): its handshake verified that the client's chain
// leads to a trusted CA and judged the refusal; the client gets that one
// message, then close_notify, and nothing else: no tunnel, no stream.
func (s *Server) answerRefusal(tc *tls.Conn, v *trust.Verdict) {
	defer tc.Close()
	addr := tc.RemoteAddr().String()
	r, ok := v.Refusal()
	certs := tc.ConnectionState().PeerCertificates
	if !ok || len(certs) == 0 {
		s.Log.Error("refusal-reason connection without a verdict; closed", "peer_addr", addr)
		return
	}
	// The words the hub logged when it refused the tunnel, if they say the
	// same as this judgement (the clock in them is that of the refusal).
	if reason, ok := s.reasons.recall(certs[0], r.Code, time.Now()); ok {
		r.Reason = reason
	}
	tc.SetWriteDeadline(time.Now().Add(s.HandshakeTimeout))
	if _, err := tc.Write(wire.AppendRefusal(nil, r)); err != nil {
		s.Log.Debug("refusal reason not sent", "peer_addr", addr, "err", err)
		return
	}
	// The refusal itself was logged (and counted) when the tunnel
	// handshake failed; this only says the client was told.
	s.Log.Debug("refusal reason sent", "peer_addr", addr, "peer", identity.Describe(certs[0]), "refusal", r.Code.String())
}

// Bounds of the reason cache: a refused client asks at once, so a minute
// is plenty, and a few hundred certificates cover a wave of refusals.
const (
	reasonCacheMax = 256
	reasonCacheTTL = time.Minute
)

// reasonCache remembers, per client certificate, the refusal the hub last
// judged for it in a tunnel handshake, as the client may read it, so that
// the refusal-reason connection repeats the words of the hub's log line.
// At most reasonCacheMax entries, oldest dropped first, each used for
// reasonCacheTTL. The zero value is ready; it is safe for concurrent use.
type reasonCache struct {
	mu      sync.Mutex
	entries map[[32]byte]cachedReason
	order   [][32]byte // keys, oldest first
}

type cachedReason struct {
	refusal wire.Refusal
	at      time.Time
}

// remember keeps the refusal of the client certificate a failed handshake
// on tc refused with err, judged at now.
func (c *reasonCache) remember(tc *tls.Conn, err error, now time.Time) {
	var leaf *x509.Certificate
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok && len(cve.UnverifiedCertificates) > 0 {
		leaf = cve.UnverifiedCertificates[0] // crypto/tls refused the chain itself
	} else if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		leaf = certs[0] // refused after the chain verified: pin, revocation
	}
	if leaf == nil {
		return
	}
	key := sha256.Sum256(leaf.Raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[[32]byte]cachedReason{}
	}
	if _, ok := c.entries[key]; !ok {
		if len(c.order) >= reasonCacheMax {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, key)
	}
	c.entries[key] = cachedReason{refusal: trust.RefusalFor(err, now), at: now}
}

// recall returns the reason remembered for leaf, if it is of the given
// code and at most reasonCacheTTL old.
func (c *reasonCache) recall(leaf *x509.Certificate, code wire.RefusalCode, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sha256.Sum256(leaf.Raw)]
	if !ok || e.refusal.Code != code || code == wire.RefusalNone || now.Sub(e.at) > reasonCacheTTL {
		return "", false
	}
	return e.refusal.Reason, true
}

// size is how many certificates the cache holds (for tests).
func (c *reasonCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
