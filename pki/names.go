package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// IdentityStrings writes n the way allow lists name it: "cn:NAME",
// "ou:UNIT", "dns:NAME", "ip:ADDRESS", "uri:URI", in that order.
func (n Names) IdentityStrings() []string {
	var out []string
	if n.CommonName != "" {
		out = append(out, "cn:"+n.CommonName)
	}
	for _, v := range n.OrganizationalUnit {
		out = append(out, "ou:"+v)
	}
	for _, v := range n.DNSNames {
		out = append(out, "dns:"+v)
	}
	for _, v := range n.IPAddresses {
		out = append(out, "ip:"+v.String())
	}
	for _, v := range n.URIs {
		out = append(out, "uri:"+v.String())
	}
	return out
}

// NamesFromIdentities reads identities as IdentityStrings writes them.
func NamesFromIdentities(ids []string) (Names, error) {
	n, err := parseIdentities(ids)
	if err != nil {
		return Names{}, err
	}
	if err := n.validate(); err != nil {
		return Names{}, err
	}
	return n, nil
}

// parseIdentities is NamesFromIdentities without the check that the names
// make a certificate on their own.
func parseIdentities(ids []string) (Names, error) {
	var n Names
	for _, id := range ids {
		kind, v, _ := strings.Cut(id, ":")
		if v == "" {
			return Names{}, fmt.Errorf("identity %q: want cn:, ou:, dns:, ip: or uri: and a value", id)
		}
		switch kind {
		case "cn":
			if n.CommonName != "" {
				return Names{}, fmt.Errorf("identity %q: a second common name", id)
			}
			n.CommonName = v
		case "ou":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "dns":
			n.DNSNames = append(n.DNSNames, v)
		case "ip":
			ip := net.ParseIP(v)
			if ip == nil {
				return Names{}, fmt.Errorf("identity %q: not an IP address", id)
			}
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			n.IPAddresses = append(n.IPAddresses, ip)
		case "uri":
			u, err := url.Parse(v)
			if err != nil {
				return Names{}, fmt.Errorf("identity %q: %w", id, err)
			}
			n.URIs = append(n.URIs, u)
		default:
			return Names{}, fmt.Errorf("identity %q: want cn:, ou:, dns:, ip: or uri: and a value", id)
		}
	}
	return n, nil
}

// namesOfRequest is what a certificate request asks for.
func namesOfRequest(csr *x509.CertificateRequest) Names {
	return Names{
		CommonName:         csr.Subject.CommonName,
		OrganizationalUnit: csr.Subject.OrganizationalUnit,
		DNSNames:           lowerAll(csr.DNSNames),
		IPAddresses:        csr.IPAddresses,
		URIs:               csr.URIs,
	}
}

// asCertificate is a certificate that carries only the names in n, for
// matching identity patterns before anything is signed.
func (n Names) asCertificate() *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: n.CommonName, OrganizationalUnit: n.OrganizationalUnit},
		DNSNames:    n.DNSNames,
		IPAddresses: n.IPAddresses,
		URIs:        n.URIs,
	}
}

// nameCert is one identity and a certificate that carries only it.
type nameCert struct {
	id   string
	cert *x509.Certificate
}

// one returns n split into certificates that carry one name each.
func (n Names) one() []nameCert {
	var out []nameCert
	for _, id := range n.IdentityStrings() {
		m, _ := parseIdentities([]string{id})
		out = append(out, nameCert{id, m.asCertificate()})
	}
	return out
}
