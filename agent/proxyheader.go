package agent

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"strings"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
	"github.com/postern-tunnel/postern/identity"
)

// PROXY protocol v2 TLVs Postern adds after the addresses, in the range the
// specification leaves to applications (0xE0-0xEF). Values are US-ASCII.
const (
	// TLVPeerIdentities: the verified peer certificate's identities, one per
	// line, as an allow entry writes them (cn:, dns:, ip:, uri:, ou:,
	// sha256:, spki:).
	TLVPeerIdentities proxyproto.PP2Type = 0xE0
	// TLVAllowEntry: the allow entry of the service that let the peer in.
	TLVAllowEntry proxyproto.PP2Type = 0xE1
)

// proxyOrigin is what a PROXY header says about a connection: where it came
// from (as the opening agent reported it) and who, verified by this agent,
// opened it.
type proxyOrigin struct {
	source, dest string            // "ip:port" each, or "" when unknown
	peer         *x509.Certificate // the verified peer
	allowed      identity.Pattern  // the allow entry that matched
	tlsVersion   uint16
}

// header builds the PROXY header of the given version. v1 carries the
// addresses only; v2 also carries the peer's verified identity: the
// standard SSL TLV (the connection used TLS with a verified client
// certificate, its version and CN) and Postern's TLVs above.
func (o proxyOrigin) header(version byte) (*proxyproto.Header, error) {
	h := proxyproto.HeaderProxyFromAddrs(version, tcpAddr(o.source), tcpAddr(o.dest))
	if version != 2 || o.peer == nil {
		return h, nil
	}
	ssl := tlvparse.PP2SSL{
		Client: tlvparse.PP2_BITFIELD_CLIENT_SSL | tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN | tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS,
		Verify: 0, // verified
		TLV: []proxyproto.TLV{
			{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(tlsVersionName(o.tlsVersion))},
			{Type: proxyproto.PP2_SUBTYPE_SSL_CN, Value: []byte(o.peer.Subject.CommonName)},
		},
	}
	sslTLV, err := ssl.Marshal()
	if err != nil {
		return nil, err
	}
	tlvs := []proxyproto.TLV{
		sslTLV,
		{Type: TLVPeerIdentities, Value: []byte(strings.Join(identity.Identities(o.peer), "\n"))},
		{Type: TLVAllowEntry, Value: []byte(o.allowed.String())},
	}
	if err := h.SetTLVs(tlvs); err != nil {
		return nil, err
	}
	return h, nil
}

// tlsVersionName is the version as HAProxy writes it in the SSL TLV
// ("TLSv1.3").
func tlsVersionName(v uint16) string {
	return strings.Replace(tls.VersionName(v), "TLS 1", "TLSv1", 1)
}

// tcpAddr parses "ip:port"; anything else yields nil, and the PROXY
// header then says the address is unknown: v1 "PROXY UNKNOWN", v2 LOCAL
// (with its TLVs). That is the header of an app on a Unix socket, whose
// end of the connection has no address to send (AF_UNIX in v2 would need
// a path, and the app's end of the socket has none).
func tcpAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}
