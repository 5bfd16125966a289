package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/wire"
)

// Side says which end of a handshake is explaining: the server explains
// what is wrong with a client, the client what is wrong with a server.
type Side int

const (
	SideServer Side = iota // we accepted the connection; the peer is a client
	SideClient             // we dialed; the peer is a server
)

func (s Side) peer() string {
	if s == SideServer {
		return "client"
	}
	return "server"
}

// Explain turns a TLS handshake (or first read) error into a sentence that
// says what went wrong and what to do. trusted lists the CA subjects this
// side trusts; now is this host's clock.
func Explain(err error, side Side, trusted []string, now time.Time) string {
	if err == nil {
		return ""
	}
	if msg, ok := explainPostern(err, side, now); ok {
		return msg
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		var leaf *x509.Certificate
		if len(cve.UnverifiedCertificates) > 0 {
			leaf = cve.UnverifiedCertificates[0]
		}
		return explainVerify(cve.Err, leaf, side, trusted, now)
	}
	if desc, ok := remoteAlert(err); ok {
		return explainAlert(desc, side)
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) {
		return explainRecordHeader(rhe, side)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("the %s did not complete the TLS handshake in time", side.peer())
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "client didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return "the client presented no certificate: every tunnel client needs cert and key configured (mutual TLS)"
	case strings.Contains(msg, "no application protocol"), strings.Contains(msg, "unsupported application protocols"):
		// The second is crypto/tls's server-side wording.
		return fmt.Sprintf("the %s does not speak %s (ALPN): is it a Postern agent?", side.peer(), wire.ALPN)
	case strings.Contains(msg, "protocol version not supported"), strings.Contains(msg, "no supported versions"),
		strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "server selected unsupported protocol version"):
		return fmt.Sprintf("no common TLS version with the %s%s: Postern needs TLS 1.3, or 1.2 when min_version = \"1.2\" on both sides", side.peer(), offeredVersions(msg))
	case strings.Contains(msg, "no cipher suite supported"), strings.Contains(msg, "no mutual cipher suite"):
		return fmt.Sprintf("no common TLS cipher suite with the %s: it offers none that Go's TLS accepts; use TLS 1.3, or a current ECDHE-AES-GCM / ChaCha20 suite with 1.2", side.peer())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(msg, "connection reset"):
		if side == SideClient {
			return "the server closed the connection during the TLS handshake: it may not be a Postern server, or it refused this client"
		}
		return "the client closed the connection during the TLS handshake (it may have rejected our certificate, or it is not a Postern agent)"
	}
	return msg
}

// offeredVersions turns crypto/tls's "offered only unsupported versions:
// [303 302]" into " (it offers only TLS 1.2, TLS 1.1)".
func offeredVersions(msg string) string {
	_, list, ok := strings.Cut(msg, "unsupported versions: [")
	if !ok {
		return ""
	}
	list, _, _ = strings.Cut(list, "]")
	var names []string
	for _, v := range strings.Fields(list) {
		n, err := strconv.ParseUint(v, 16, 16)
		if err != nil {
			return ""
		}
		names = append(names, tls.VersionName(uint16(n)))
	}
	return " (it offers only " + strings.Join(names, ", ") + ")"
}

// explainPostern explains the refusals Postern adds to crypto/tls's own
// checks: revocation, stale CRLs, OCSP and peer pins.
func explainPostern(err error, side Side, now time.Time) (string, bool) {
	var (
		re *RevokedError
		se *StaleCRLError
		pe *PinError
		oe *OCSPError
	)
	switch {
	case errors.As(err, &re):
		what := fmt.Sprintf("%s certificate %s", side.peer(), Subject(re.Cert))
		if re.Cert != nil && re.Cert.IsCA {
			what = fmt.Sprintf("the CA %s in the %s's chain", Subject(re.Cert), side.peer())
		}
		return fmt.Sprintf("%s was revoked%s according to %s — the %s needs a new certificate (or, if it was revoked by mistake, a CRL without it)%s",
			what, re.when(), re.Source, side.peer(), facts(re.Cert)), true
	case errors.As(err, &se):
		return fmt.Sprintf("cannot check %s certificate %s for revocation: %s — publish a fresh CRL (postern pki crl) and check this host's clock (NTP), or set crl_stale = \"warn\"%s",
			side.peer(), Subject(se.Cert), se.CRL.staleText(now), facts(se.Cert)), true
	case errors.As(err, &pe):
		return fmt.Sprintf("%s certificate %s matches none of peer = [%s]: it has %s — check that this is the right %s, or update peer%s",
			side.peer(), Subject(pe.Cert), strings.Join(pe.Pins, ", "), idList(pe.Cert), side.peer(), facts(pe.Cert)), true
	case errors.As(err, &oe):
		return fmt.Sprintf("cannot check %s certificate %s with its OCSP responder %s: %v; ocsp = \"hard\" refuses without an answer — check that this host can reach the responder, or set ocsp = \"soft\"%s",
			side.peer(), Subject(oe.Cert), oe.URL, oe.Err, facts(oe.Cert)), true
	}
	return "", false
}

func (c *CRL) staleText(now time.Time) string {
	return fmt.Sprintf("CRL %s of %s is stale: its next update was %s (%s ago; local clock %s)",
		c.Path, Subject(c.Issuer), c.List.NextUpdate.UTC().Format(time.RFC3339),
		roundAgo(now.Sub(c.List.NextUpdate)), now.UTC().Format(time.RFC3339))
}

func explainVerify(err error, leaf *x509.Certificate, side Side, trusted []string, now time.Time) string {
	who := fmt.Sprintf("%s certificate", side.peer())
	if leaf != nil {
		who = fmt.Sprintf("%s certificate %s", side.peer(), Subject(leaf))
	}
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		issuer := "unknown issuer"
		if leaf != nil {
			issuer = issuerName(leaf)
		}
		return fmt.Sprintf("%s was signed by an unknown authority (issuer %s); trusted: %s%s",
			who, issuer, strings.Join(trusted, ", "), fingerprintNote(leaf))
	case errors.As(err, &ci):
		return explainInvalid(ci, who, leaf, now)
	case errors.As(err, &he):
		names := certNames(he.Certificate)
		return fmt.Sprintf("%s is not valid for %q: it names %s — set server_name to one of these, or %s%s",
			who, he.Host, names, reissueHint(he.Host), facts(he.Certificate))
	}
	return fmt.Sprintf("%s: %v%s", who, err, facts(leaf))
}

func explainInvalid(ci x509.CertificateInvalidError, who string, leaf *x509.Certificate, now time.Time) string {
	c := ci.Cert
	if c == nil {
		c = leaf
	}
	if c != nil && leaf != nil && c != leaf && !bytes.Equal(c.Raw, leaf.Raw) {
		who = fmt.Sprintf("%s: its issuing CA %s", who, Subject(c))
	}
	switch ci.Reason {
	case x509.Expired:
		if c != nil && now.After(c.NotAfter) {
			return fmt.Sprintf("%s expired %s ago (not after %s; local clock %s) — renew it, or check this host's clock (NTP)%s",
				who, roundAgo(now.Sub(c.NotAfter)), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), facts(c))
		}
		if c != nil {
			return fmt.Sprintf("%s is not valid yet: valid from %s (in %s; local clock %s) — check this host's clock (NTP)%s",
				who, c.NotBefore.UTC().Format(time.RFC3339), roundAgo(c.NotBefore.Sub(now)), now.UTC().Format(time.RFC3339), facts(c))
		}
		return fmt.Sprintf("%s is expired or not yet valid (%s) — check the certificate and this host's clock (NTP)", who, ci.Detail)
	case x509.IncompatibleUsage:
		return fmt.Sprintf("%s may not be used for this purpose (extended key usage %s): a tunnel server needs serverAuth, a client clientAuth — issue it with the right usage (postern pki issue --usage both)%s",
			who, extUsage(c), facts(c))
	case x509.NotAuthorizedToSign:
		return fmt.Sprintf("%s was signed by a certificate that is not a CA%s", who, facts(leaf))
	}
	return fmt.Sprintf("%s is invalid: %v%s", who, ci, facts(leaf))
}

// remoteAlert finds a TLS alert the peer sent. Over TCP crypto/tls reports
// it as a net.OpError "remote error" around an unexported alert type.
func remoteAlert(err error) (string, bool) {
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return strings.TrimPrefix(alert.Error(), "tls: "), true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		return strings.TrimPrefix(op.Err.Error(), "tls: "), true
	}
	return "", false
}

// certAlerts are the alerts a peer sends when it refuses a certificate
// (crypto/tls wording), with what to check. A Postern peer sends "bad
// certificate" for a revoked certificate or a pin mismatch too: its own
// log says which.
var certAlerts = map[string]string{
	"bad certificate":               "check that it trusts our CA and that our certificate is valid and not revoked; its log says which check failed",
	"unknown certificate authority": "it does not trust the CA that signed our certificate: give it our CA, or get a certificate from one it trusts",
	"unknown certificate":           "check that it trusts our CA",
	"unsupported certificate":       "check our certificate's key type and usage (clientAuth/serverAuth)",
	"expired certificate":           "our certificate is expired or not yet valid: renew it, or check both hosts' clocks (NTP)",
	"revoked certificate":           "our certificate has been revoked: get a new one",
	"certificate required":          "it requires a client certificate: configure cert and key",
	"access denied":                 "it does not allow our identity",
}

func explainAlert(desc string, side Side) string {
	if hint, ok := certAlerts[desc]; ok {
		if side == SideClient {
			return fmt.Sprintf("the server rejected our certificate (alert: %s): %s", desc, hint)
		}
		if desc == "bad certificate" {
			hint = "check that it trusts our CA, that our certificate is valid and not revoked, that it carries the name the client dials (server_name), and that it matches what the client pins (peer); the client's log says which check failed"
		}
		return fmt.Sprintf("the client rejected our certificate (alert: %s): %s", desc, hint)
	}
	switch desc {
	case "protocol version not supported":
		return fmt.Sprintf("the %s refused our TLS version (alert: %s): check min_version on both sides", side.peer(), desc)
	case "no application protocol":
		return fmt.Sprintf("the %s does not speak %s (alert: %s): is it a Postern agent?", side.peer(), wire.ALPN, desc)
	case "handshake failure":
		return fmt.Sprintf("the %s ended the handshake (alert: %s): no common TLS version or cipher suite", side.peer(), desc)
	}
	return fmt.Sprintf("the %s sent a TLS alert: %s", side.peer(), desc)
}

func explainRecordHeader(rhe tls.RecordHeaderError, side Side) string {
	h := rhe.RecordHeader[:]
	if side == SideClient && bytes.HasPrefix(h, []byte("HTTP/")) {
		return "the server answered with plain HTTP, not TLS: check that servers names the Postern tunnel port, not a web server"
	}
	for _, m := range []string{"GET ", "POST", "HEAD", "PUT ", "DELE", "OPTI", "CONN", "PATC", "PRI "} {
		if bytes.HasPrefix(h, []byte(m)) {
			return fmt.Sprintf("the %s sent a plain HTTP request, not TLS: point it at an HTTP service, not the tunnel port", side.peer())
		}
	}
	if bytes.HasPrefix(h, []byte("SSH-")) {
		return fmt.Sprintf("the %s speaks SSH, not TLS", side.peer())
	}
	if side == SideClient {
		return fmt.Sprintf("the server is not speaking TLS (first bytes %x): check that servers names the Postern tunnel port", h)
	}
	return fmt.Sprintf("the %s is not speaking TLS (first bytes %x)", side.peer(), h)
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return fmt.Sprintf("CN=%q", c.Issuer.CommonName)
	}
	return c.Issuer.String()
}

func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no names"
	}
	var names []string
	for _, d := range c.DNSNames {
		names = append(names, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	if len(names) == 0 {
		return fmt.Sprintf("no DNS or IP names (only %s)", Subject(c))
	}
	return strings.Join(names, ", ")
}

// idList lists what a certificate can be matched by, for a pin mismatch.
func idList(c *x509.Certificate) string {
	ids := identity.Identities(c)
	for i, id := range ids {
		ids[i] = fmt.Sprintf("%q", id)
	}
	return strings.Join(ids, ", ")
}

func extUsage(c *x509.Certificate) string {
	if c == nil || len(c.ExtKeyUsage) == 0 {
		return "unknown"
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "serverAuth")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "clientAuth")
		case x509.ExtKeyUsageAny:
			out = append(out, "any")
		default:
			out = append(out, fmt.Sprintf("#%d", u))
		}
	}
	return "only " + strings.Join(out, ", ")
}

// fingerprintNote is facts without the issuer, for messages that name it.
func fingerprintNote(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf(" (serial %s, sha256:%s)", c.SerialNumber.Text(16), hex.EncodeToString(sum[:]))
}

// facts ends a message with what identifies the certificate exactly: its
// issuer, serial and SHA-256 fingerprint.
func facts(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf(" [issuer %s, serial %s, sha256:%s]", issuerName(c), serialHex(c), hex.EncodeToString(sum[:]))
}

// roundAgo prints a duration the way people say it: 45s, 12m5s, 3h12m, 2d4h.
func roundAgo(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// RoundDuration prints a duration the way Explain does: 45s, 12m5s, 3h12m, 2d4h.
func RoundDuration(d time.Duration) string { return roundAgo(d) }
