package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/wire"
)

// A refusal-reason connection (docs/protocol.md, "Refusal reasons") is how
// a client the hub refused learns why. The tunnel handshake is left as it
// is: crypto/tls verifies the client's chain and refuses with an alert.
// Afterwards the client may connect once more offering only
// wire.RefusalALPN. On that connection the hub takes any client
// certificate, and the handshake completes (the client has then proved it
// holds the certificate's key) only when the chain verifies to a CA the
// hub trusts, at the current time or, for an expired or not yet valid
// certificate, within its validity. The hub then sends one refusal
// message with its reason, judged afresh, and closes: nothing else is
// served on that connection. A chain that does not verify gets the same
// alert as any refused handshake, and nothing else.

// AsksRefusal reports whether a ClientHello opens a refusal-reason
// connection: it offers wire.RefusalALPN and nothing else.
func AsksRefusal(h *tls.ClientHelloInfo) bool {
	return slices.Equal(h.SupportedProtos, []string{wire.RefusalALPN})
}

// Verdict is what the handshake of a refusal-reason connection found: the
// refusal to send. The handshake's goroutine writes it; read it after the
// handshake has returned.
type Verdict struct {
	mu      sync.Mutex
	refusal wire.Refusal
	set     bool
}

type verdictKey struct{}

// WithVerdict returns ctx carrying a fresh Verdict: pass the context to
// tls.Conn.HandshakeContext, and after the handshake the Verdict holds
// the refusal when the connection asked for one.
func WithVerdict(ctx context.Context) (context.Context, *Verdict) {
	v := &Verdict{}
	return context.WithValue(ctx, verdictKey{}, v), v
}

// Refusal returns the refusal the handshake judged, and whether it judged
// one.
func (v *Verdict) Refusal() (wire.Refusal, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.refusal, v.set
}

func (v *Verdict) store(r wire.Refusal) {
	v.mu.Lock()
	v.refusal, v.set = r, true
	v.mu.Unlock()
}

// refusalConfig is the TLS configuration of a refusal-reason connection.
func (c *Credentials) refusalConfig(m *Material, h *tls.ClientHelloInfo, peers identity.List) *tls.Config {
	cfg := baseConfig(m)
	cfg.NextProtos = []string{wire.RefusalALPN}
	// Any certificate is requested; VerifyConnection does the verifying.
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.SessionTicketsDisabled = true
	v, _ := h.Context().Value(verdictKey{}).(*Verdict)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if v == nil || cs.NegotiatedProtocol != wire.RefusalALPN {
			return errors.New("refusal-reason connection without a verdict to fill")
		}
		r, err := c.Judge(m, cs.PeerCertificates, peers, time.Now())
		if err != nil {
			return err
		}
		v.store(r)
		return nil
	}
	return cfg
}

// Judge decides what a hub tells a client about its certificate chain
// (leaf first, as sent). A chain that does not verify to a CA of m, at now
// or at any time within the leaf's validity, is an error: the client
// learns nothing. Otherwise the result is the refusal a tunnel handshake
// at now would meet (RefusalNone if none): an expired or not yet valid
// certificate, a pin or identity mismatch, revocation, or revocation that
// could not be checked. Its reason is the hub's own sentence, without
// what it says about other peers (the peer identities it accepts).
func (c *Credentials) Judge(m *Material, certs []*x509.Certificate, peers identity.List, now time.Time) (wire.Refusal, error) {
	if len(certs) == 0 {
		return wire.Refusal{}, errors.New("tls: client didn't provide a certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         m.Roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	leaf := certs[0]
	chains, err := leaf.Verify(opts)
	if err != nil {
		verr := &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
		if !verifiesSometime(m, leaf, opts, err) {
			return wire.Refusal{}, verr
		}
		return RefusalFor(verr, now), nil
	}
	if len(peers) > 0 {
		if _, ok := peers.MatchVerified(chains); !ok {
			return RefusalFor(&PinError{Cert: leaf, Pins: peers.Strings()}, now), nil
		}
	}
	return RefusalFor(c.checkRevocation(m, chains, SideServer, now, false), now), nil
}

// verifiesSometime reports whether a chain that failed to verify with err
// only because of the time would verify within the leaf's validity.
func verifiesSometime(m *Material, leaf *x509.Certificate, opts x509.VerifyOptions, err error) bool {
	var ci x509.CertificateInvalidError
	if !errors.As(err, &ci) || ci.Reason != x509.Expired {
		return false
	}
	// Every certificate of the chain must be valid at the time tried: the
	// ends and middle of the leaf's validity, and where a trusted CA's
	// validity starts or ends within it. At most maxTries tries.
	const maxTries = 8
	mid := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	times := []time.Time{leaf.NotAfter, leaf.NotBefore, mid}
	for _, ca := range m.CAs {
		for _, at := range []time.Time{ca.NotBefore, ca.NotAfter} {
			if !at.Before(leaf.NotBefore) && !at.After(leaf.NotAfter) {
				times = append(times, at)
			}
		}
	}
	for _, at := range times[:min(len(times), maxTries)] {
		opts.CurrentTime = at
		if _, err := leaf.Verify(opts); err == nil {
			return true
		}
	}
	return false
}

// RefusalFor is the refusal message for a refusal of a client whose chain
// verifies to a trusted CA: its class, and the hub's sentence
// (ExplainToPeer). A nil err is RefusalNone.
func RefusalFor(err error, now time.Time) wire.Refusal {
	if err == nil {
		return wire.Refusal{Code: wire.RefusalNone}
	}
	code := wire.RefusalOther
	var (
		ci x509.CertificateInvalidError
		re *RevokedError
		pe *PinError
		se *StaleCRLError
		oe *OCSPError
	)
	switch {
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		code = wire.RefusalExpired
		if ci.Cert != nil && now.Before(ci.Cert.NotBefore) {
			code = wire.RefusalNotYetValid
		}
	case errors.As(err, &re):
		code = wire.RefusalRevoked
	case errors.As(err, &pe):
		code = wire.RefusalIdentity
	case errors.As(err, &se), errors.As(err, &oe):
		code = wire.RefusalUnchecked
	}
	return wire.Refusal{Code: code, Reason: ExplainToPeer(err, now)}
}

// ExplainToPeer is the sentence the hub logs for a refused client (Explain
// with SideServer), as the client may read it: a pin or identity mismatch
// does not list the identities the hub accepts, and no trusted CA is named.
func ExplainToPeer(err error, now time.Time) string {
	var pe *PinError
	if errors.As(err, &pe) {
		return fmt.Sprintf("client certificate %s matches none of the identities the server accepts (peer; not shown to the client): it has %s — check that this is the right client, or update peer%s",
			Subject(pe.Cert), idList(pe.Cert), facts(pe.Cert))
	}
	return Explain(err, SideServer, nil, now)
}

// refusalAlerts are the alerts a Postern server sends when it refuses a
// client certificate whose chain may verify: after one of them a client
// may ask for the reason. ("unknown certificate authority" is left out:
// there is nothing more to learn.)
var refusalAlerts = []string{"bad certificate", "expired certificate", "revoked certificate", "unknown certificate"}

// RefusedCertificate reports whether err (from a client's handshake or
// first read) is the server refusing this client's certificate with an
// alert that a refusal-reason connection may explain.
func RefusedCertificate(err error) bool {
	desc, ok := remoteAlert(err)
	return ok && slices.Contains(refusalAlerts, desc)
}

// RefusedMessage is what a client says when the hub told it why it was
// refused.
func RefusedMessage(r wire.Refusal) string {
	return "hub refused this agent's certificate: " + strings.TrimSpace(r.Reason)
}
