package server

import (
	"bytes"
	"crypto/tls"
	"net"
	"slices"

	"github.com/postern-tunnel/postern/wire"
)

// Enrollment makes a Server also answer enrollment connections: a client
// that offers ALPN wire.EnrollALPN gets a TLS 1.3 handshake without a
// client certificate, and the connection goes to Handle instead of
// becoming a tunnel. Nothing else can happen on it: Handle reads one
// request and writes one response. The handshake passes the same gate
// (max_handshakes, max_handshakes_per_address, timeouts) as a tunnel's.
type Enrollment struct {
	// CA returns the DER of the CA certificate sent after the server's own
	// chain, so a new site can authenticate the hub by the CA's
	// fingerprint alone. Called once per enrollment handshake.
	CA func() []byte
	// Handle owns c (a completed handshake) and closes it; it runs on its
	// own goroutine with no deadline set.
	Handle func(c *tls.Conn)
}

// withEnrollment wraps cfg so a ClientHello offering wire.EnrollALPN gets
// the enrollment configuration; every other one gets cfg's.
func (s *Server) withEnrollment(cfg *tls.Config) *tls.Config {
	tunnels := cfg.GetConfigForClient
	out := cfg.Clone()
	out.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(h.SupportedProtos, wire.EnrollALPN) {
			s.enrolling.Store(h.Conn, struct{}{})
			return s.enrollConfig(), nil
		}
		if tunnels == nil {
			return nil, nil
		}
		return tunnels(h)
	}
	return out
}

// enrollConfig presents this server's certificate chain with the CA
// certificate after it, and asks for no client certificate.
func (s *Server) enrollConfig() *tls.Config {
	m := s.Creds.Load()
	cert := m.Cert
	if ca := s.Enroll.CA(); len(ca) > 0 && !slices.ContainsFunc(cert.Certificate, func(c []byte) bool { return bytes.Equal(c, ca) }) {
		cert.Certificate = append(slices.Clip(cert.Certificate), ca)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		NextProtos:             []string{wire.EnrollALPN},
		ClientAuth:             tls.NoClientCert,
		SessionTicketsDisabled: true, // an enrollment session never resumes into a tunnel
	}
}

// isEnrollment reports whether tc, a completed handshake, is an
// enrollment connection.
func (s *Server) isEnrollment(tc *tls.Conn) bool {
	return s.Enroll != nil && tc.ConnectionState().NegotiatedProtocol == wire.EnrollALPN
}

// enrollAttempt reports, once, whether the handshake on conn asked for
// enrollment (and forgets it).
func (s *Server) enrollAttempt(conn net.Conn) bool {
	_, ok := s.enrolling.LoadAndDelete(conn)
	return ok
}

// enrollReason says that a failed handshake was a new site's enrollment:
// when the site refused our certificate, its token named another CA or a
// host our certificate does not carry, and it never sent the token.
func enrollReason(cause Cause, reason string) string {
	if cause == CauseRejected {
		return "an enrolling site (ALPN " + wire.EnrollALPN + ") refused our certificate: its token names another CA than [ca] dir's, or a host our certificate does not carry; it sent no token (" + reason + ")"
	}
	return "enrollment handshake: " + reason
}
