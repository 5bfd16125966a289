package server

import (
	"crypto/tls"
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
	if !ok {
		s.Log.Error("refusal-reason connection without a verdict; closed", "peer_addr", addr)
		return
	}
	tc.SetWriteDeadline(time.Now().Add(s.HandshakeTimeout))
	if _, err := tc.Write(wire.AppendRefusal(nil, r)); err != nil {
		s.Log.Debug("refusal reason not sent", "peer_addr", addr, "err", err)
		return
	}
	var who string
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		who = identity.Describe(certs[0])
	}
	// The refusal itself was logged (and counted) when the tunnel
	// handshake failed; this only says the client was told.
	s.Log.Debug("refusal reason sent", "peer_addr", addr, "peer", who, "refusal", r.Code.String())
}
