package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// The signing side of renewal: an agent with [ca] renews the certificate
// a peer presents on a live tunnel, when that certificate is its CA's,
// valid now and not revoked, and the request asks for exactly its
// identities (within [ca] identities and key_types).

// renewMinGap is the shortest time between two renewals signed over one
// tunnel: a peer cannot make the CA sign in a loop.
const renewMinGap = 2 * time.Second

// renewRefusal is a renewal the signing side turned down; reason is what
// both sides log.
type renewRefusal struct {
	code   wire.ControlCode
	reason string
}

func (r *renewRefusal) Error() string { return r.reason }

func refuseRenewal(format string, args ...any) *renewRefusal {
	return &renewRefusal{code: wire.ControlRefused, reason: fmt.Sprintf(format, args...)}
}

// openCA opens the [ca] folder afresh for each use, so `postern pki`
// commands run beside the agent (revoke, issue) are seen at once.
func (a *Agent) openCA() (*config.CA, *capki.CA, *renewRefusal) {
	cc := a.snapshot().CA
	if cc == nil {
		return nil, nil, &renewRefusal{wire.ControlUnavailable, "this agent has no [ca]: it does not sign certificates"}
	}
	ca, err := capki.Open(cc.Dir)
	if err != nil {
		a.log.Error("[ca] folder does not open; renewals and CRL push stop until it does", "dir", cc.Dir, "err", err)
		return nil, nil, &renewRefusal{wire.ControlUnavailable, "this agent's CA folder does not open (see its log)"}
	}
	ca.Time = a.renew.clock
	return cc, ca, nil
}

// answerCAInfo tells a peer which CA this agent signs renewals with.
func (a *Agent) answerCAInfo() wire.ControlReply {
	cc, ca, refusal := a.openCA()
	if refusal != nil {
		return wire.ControlReply{Code: refusal.code, Reason: refusal.reason}
	}
	if !*cc.Renew {
		return wire.ControlReply{Code: wire.ControlUnavailable, Reason: "this agent does not sign renewals ([ca] renew = false)"}
	}
	return wire.ControlReply{Code: wire.ControlOK, Payload: ca.Cert.Raw}
}

// answerRenew signs a renewal for the peer of t.
func (a *Agent) answerRenew(t *tunnel.Tunnel, csrDER []byte, log *slog.Logger) wire.ControlReply {
	a.renew.init(a)
	presented := a.renew.successor(t)
	if presented == nil {
		presented = t.ConnectionState().PeerCertificates
	}
	if len(presented) == 0 {
		return wire.ControlReply{Code: wire.ControlRefused, Reason: "no certificate on this tunnel"}
	}
	if last, ok := a.renew.lastSigned.Load(t); ok && time.Since(last.(time.Time)) < renewMinGap {
		a.renew.signed.WithLabelValues("refused").Inc()
		log.Warn("certificate renewal refused", "cert", trust.Subject(presented[0]), "reason", "renewed moments ago on this tunnel")
		return wire.ControlReply{Code: wire.ControlRefused, Reason: fmt.Sprintf("renewed less than %s ago on this tunnel; try again later", renewMinGap)}
	}
	chain, cert, refusal := a.signRenewal(presented[0], csrDER, a.renew.now(), false)
	if refusal != nil {
		a.renew.signed.WithLabelValues("refused").Inc()
		log.Warn("certificate renewal refused", "cert", trust.Subject(presented[0]), "serial", presented[0].SerialNumber.Text(16), "reason", refusal.reason)
		return wire.ControlReply{Code: refusal.code, Reason: refusal.reason}
	}
	a.renew.setSuccessor(t, append([]*x509.Certificate{cert}, presented[1:]...))
	a.renew.lastSigned.Store(t, time.Now())
	a.renew.signed.WithLabelValues("signed").Inc()
	log.Info("certificate renewed for peer", "cert", trust.Subject(cert), "serial", cert.SerialNumber.Text(16),
		"was_serial", presented[0].SerialNumber.Text(16), "not_after", stamp(cert.NotAfter))
	return wire.ControlReply{Code: wire.ControlOK, Payload: chain}
}

// signRenewal checks a renewal of presented and signs it; it returns the
// new chain as PEM and its leaf.
// local is set for this agent's own certificate, which [ca] renew = false
// does not stop.
func (a *Agent) signRenewal(presented *x509.Certificate, csrDER []byte, now time.Time, local bool) ([]byte, *x509.Certificate, *renewRefusal) {
	cc, ca, refusal := a.openCA()
	if refusal != nil {
		return nil, nil, refusal
	}
	if !*cc.Renew && !local {
		return nil, nil, &renewRefusal{wire.ControlUnavailable, "this agent does not sign renewals ([ca] renew = false)"}
	}
	if err := presented.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, nil, refuseRenewal("certificate %s was not issued by this agent's CA %s", trust.Subject(presented), trust.Subject(ca.Cert))
	}
	switch {
	case now.After(presented.NotAfter):
		return nil, nil, refuseRenewal("certificate %s (serial %s) expired at %s: only a valid certificate is renewed; enroll again with a new invitation",
			trust.Subject(presented), presented.SerialNumber.Text(16), stamp(presented.NotAfter))
	case now.Before(presented.NotBefore):
		return nil, nil, refuseRenewal("certificate %s (serial %s) is not valid before %s (check the clocks)", trust.Subject(presented), presented.SerialNumber.Text(16), stamp(presented.NotBefore))
	}
	serial := capki.FormatSerial(presented.SerialNumber)
	for _, r := range ca.Revoked() {
		if r.Serial == serial {
			return nil, nil, refuseRenewal("certificate %s (serial %s) was revoked on %s (reason: %s): a revoked certificate is not renewed",
				trust.Subject(presented), serial, stamp(r.RevokedAt), capki.ReasonName(r.Reason))
		}
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, refuseRenewal("certificate request does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, refuseRenewal("certificate request signature does not verify: %v", err)
	}
	if kt := keyTypeOf(csr.PublicKey); len(cc.KeyTypes) > 0 && !slices.ContainsFunc(cc.KeyTypes, func(s string) bool { return strings.EqualFold(s, string(kt)) }) {
		return nil, nil, refuseRenewal("key %s is not in [ca] key_types (%s)", capki.KeyDescription(csr.PublicKey), strings.Join(cc.KeyTypes, ", "))
	}
	want, got := identity.NameIdentities(presented), identity.NameIdentities(csrNames(csr))
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return nil, nil, refuseRenewal("the request changes the identity: it asks for [%s], the certificate carries [%s]; a renewal keeps the identities",
			strings.Join(got, ", "), strings.Join(want, ", "))
	}
	if id, ok := outsideCAIdentities(cc.Identities, presented); !ok {
		return nil, nil, refuseRenewal("identity %s is outside [ca] identities", id)
	}
	a.renew.signMu.Lock()
	defer a.renew.signMu.Unlock()
	cert, err := ca.Sign(csr, capki.SignOptions{Usage: usageOf(presented), Validity: cc.Validity.D()})
	if err != nil {
		a.log.Error("renewal not signed", "cert", trust.Subject(presented), "err", err)
		return nil, nil, refuseRenewal("the CA did not sign: %v", err)
	}
	return ca.ChainPEM(cert), cert, nil
}

// csrNames is a request's names as a certificate, for identity functions.
func csrNames(csr *x509.CertificateRequest) *x509.Certificate {
	return &x509.Certificate{Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, URIs: csr.URIs}
}

// outsideCAIdentities reports the first name identity of c that no pattern
// of [ca] identities allows; an empty list allows every one.
func outsideCAIdentities(patterns []string, c *x509.Certificate) (string, bool) {
	if len(patterns) == 0 {
		return "", true
	}
	l, err := identity.ParseList(patterns)
	if err != nil {
		return "(invalid [ca] identities: " + err.Error() + ")", false
	}
	for _, id := range identity.NameIdentities(c) {
		kind, v, _ := strings.Cut(id, ":")
		one := &x509.Certificate{}
		switch kind {
		case identity.KindCN:
			one.Subject.CommonName = v
		case identity.KindDNS:
			one.DNSNames = []string{v}
		case identity.KindIP:
			one.IPAddresses = []net.IP{net.ParseIP(v)}
		case identity.KindURI:
			u, _ := url.Parse(v)
			one.URIs = []*url.URL{u}
		case identity.KindOU:
			one.Subject.OrganizationalUnit = []string{v}
		}
		if _, ok := l.Match(one); !ok {
			return id, false
		}
	}
	return "", true
}

// usageOf is what a renewal keeps of the certificate's key usage.
func usageOf(c *x509.Certificate) capki.Usage {
	var u capki.Usage
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			u |= capki.UsageServer
		case x509.ExtKeyUsageClientAuth:
			u |= capki.UsageClient
		case x509.ExtKeyUsageAny:
			u |= capki.UsageBoth
		}
	}
	if u == 0 {
		u = capki.UsageBoth
	}
	return u
}

// keyTypeOf names the kind of key pub is, to make a fresh one like it.
func keyTypeOf(pub crypto.PublicKey) capki.KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return capki.KeyECDSAP384
		}
		return capki.KeyECDSAP256
	case ed25519.PublicKey:
		return capki.KeyEd25519
	case *rsa.PublicKey:
		switch {
		case k.N.BitLen() >= 4096:
			return capki.KeyRSA4096
		case k.N.BitLen() >= 3072:
			return capki.KeyRSA3072
		}
		return capki.KeyRSA2048
	}
	return capki.KeyECDSAP256
}
