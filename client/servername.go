package client

import (
	"net"
	"net/netip"
)

// ServerNameOf is the name a server's certificate must carry when the
// client sets no server_name: the host of the address it dials. A
// bracketed IPv6 literal gives its address ("[2001:db8::1]:7443" →
// "2001:db8::1", checked against the certificate's IP SANs), without a
// zone ("[fe80::1%eth0]:7443" → "fe80::1"), which only says which
// interface to leave by and is in no certificate.
func ServerNameOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.WithZone("").String()
	}
	return host
}
