package server

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/wire"
)

// TestReasonCacheBounds: the cache holds at most reasonCacheMax
// certificates, oldest dropped first, and a reason only for its code and
// for reasonCacheTTL.
func TestReasonCacheBounds(t *testing.T) {
	var c reasonCache
	now := time.Now()
	leaf := func(i int) *x509.Certificate {
		return &x509.Certificate{Raw: big.NewInt(int64(i) + 1).Bytes(), SerialNumber: big.NewInt(int64(i))}
	}
	refuse := func(l *x509.Certificate) error {
		return &tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{l},
			Err: x509.CertificateInvalidError{Cert: l, Reason: x509.Expired}}
	}
	for i := range reasonCacheMax + 10 {
		c.remember(nil, refuse(leaf(i)), now)
	}
	if n := c.size(); n != reasonCacheMax {
		t.Errorf("cache holds %d certificates, want %d", n, reasonCacheMax)
	}
	if _, ok := c.recall(leaf(0), wire.RefusalExpired, now); ok {
		t.Error("the oldest certificate is still remembered past the bound")
	}
	last := leaf(reasonCacheMax + 9)
	want := trust.RefusalFor(refuse(last), now).Reason
	if r, ok := c.recall(last, wire.RefusalExpired, now); !ok || r != want {
		t.Errorf("recall = %q, %v; want %q", r, ok, want)
	}
	if _, ok := c.recall(last, wire.RefusalRevoked, now); ok {
		t.Error("recalled for another refusal code")
	}
	if _, ok := c.recall(last, wire.RefusalExpired, now.Add(reasonCacheTTL+time.Second)); ok {
		t.Error("recalled after reasonCacheTTL")
	}
	// Remembering a certificate again does not take a second place.
	c.remember(nil, refuse(last), now)
	if n := c.size(); n != reasonCacheMax || len(c.order) != reasonCacheMax {
		t.Errorf("after a repeat: %d entries, %d in order; want %d", n, len(c.order), reasonCacheMax)
	}
}
