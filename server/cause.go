package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/postern-tunnel/postern/trust"
)

// Cause is the class of a refused connection: a small fixed set, so it can
// key the refusal log and label a metric. It comes from the error's type
// and crypto/tls's own wording, never from bytes the peer chose.
type Cause string

const (
	CauseProbe       Cause = "probe"       // closed without sending a byte (a load balancer's health check)
	CauseBusy        Cause = "busy"        // max_handshakes reached: dropped, or closed before its hello to make room
	CauseSourceBusy  Cause = "source_busy" // max_handshakes_per_address reached for its address
	CauseTimeout     Cause = "timeout"     // no ClientHello within hello_timeout, or no handshake within handshake_timeout
	CauseNotTLS      Cause = "not_tls"     // the first bytes are not a TLS record
	CauseHTTP        Cause = "http"        // the first bytes are a plain HTTP request
	CauseCertificate Cause = "certificate" // the client's certificate was missing or refused
	CauseRejected    Cause = "rejected"    // the client sent an alert: it refused us
	CauseProtocol    Cause = "protocol"    // no common TLS version, cipher suite or ALPN
	CauseClosed      Cause = "closed"      // closed or reset mid-handshake
	CauseOther       Cause = "other"
)

// Causes lists every cause, for metrics that want each label present.
var Causes = []Cause{CauseProbe, CauseBusy, CauseSourceBusy, CauseTimeout, CauseNotTLS, CauseHTTP,
	CauseCertificate, CauseRejected, CauseProtocol, CauseClosed, CauseOther}

// classify finds the cause of a failed handshake. silent says the client
// sent no byte before err.
func classify(err error, silent bool) Cause {
	var (
		ne  net.Error
		rhe tls.RecordHeaderError
		cve *tls.CertificateVerificationError
		re  *trust.RevokedError
		se  *trust.StaleCRLError
		pe  *trust.PinError
		oe  *trust.OCSPError
		ue  x509.UnknownAuthorityError
		ie  x509.CertificateInvalidError
		he  x509.HostnameError
		ae  tls.AlertError
		op  *net.OpError
	)
	closed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ne) && ne.Timeout():
		return CauseTimeout
	case silent && closed:
		return CauseProbe
	case errors.As(err, &rhe):
		for _, m := range []string{"GET ", "POST", "HEAD", "PUT ", "DELE", "OPTI", "CONN", "PATC", "PRI "} {
			if string(rhe.RecordHeader[:4]) == m {
				return CauseHTTP
			}
		}
		return CauseNotTLS
	case errors.As(err, &cve), errors.As(err, &re), errors.As(err, &se), errors.As(err, &pe),
		errors.As(err, &oe), errors.As(err, &ue), errors.As(err, &ie), errors.As(err, &he):
		return CauseCertificate
	case errors.As(err, &ae), errors.As(err, &op) && op.Op == "remote error":
		return CauseRejected
	case closed:
		return CauseClosed
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "client didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return CauseCertificate
	case strings.Contains(msg, "application protocol"), strings.Contains(msg, "does not speak"), strings.Contains(msg, "unsupported versions"),
		strings.Contains(msg, "no supported versions"), strings.Contains(msg, "protocol version not supported"),
		strings.Contains(msg, "cipher suite"):
		return CauseProtocol
	}
	return CauseOther
}
