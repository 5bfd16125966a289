package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

// ---- intermediate

type pkiIntermediateFlags struct {
	dir       string
	out       string
	csr       string
	cn        string
	permitDNS pkiListFlag
	permitURI pkiListFlag
	permitIP  pkiCIDRFlag
	validity  pkiDurationFlag
	keyType   pkiKeyTypeFlag
}

// pkiIntermediate signs a name-constrained intermediate CA for a partner
// that runs its own CA under this one: either a key made here, in a new CA
// folder (--out DIR), or the partner's key from a CSR (--csr FILE.csr
// --out PREFIX), so the partner's CA key never travels.
func pkiIntermediate(env pkiEnv, args []string) int {
	f := pkiIntermediateFlags{}
	fs := pkiFlags("intermediate", "--cn NAME --permit-dns DOMAIN... [--permit-uri HOST]... [--permit-ip CIDR]... [--validity 2y] (--out DIR | --csr FILE.csr [--out PREFIX])", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder` that signs (made with `postern pki init --intermediates`)")
	fs.StringVar(&f.out, "out", "", "new CA `folder` for the partner; with --csr: write PREFIX.crt (default: the request's file name)")
	fs.StringVar(&f.csr, "csr", "", "sign the partner CA's key from this `FILE.csr` (postern pki request --cn NAME) instead of making one here")
	fs.StringVar(&f.cn, "cn", "", "the partner CA's common `name`, shown to peers in errors; required (with --csr: default the request's CN)")
	fs.Var(&f.permitDNS, "permit-dns", "`DOMAIN` the partner may certify, with every name under it; repeatable")
	fs.Var(&f.permitURI, "permit-uri", "`HOST` of URI names the partner may certify (spiffe://HOST/...); repeatable")
	fs.Var(&f.permitIP, "permit-ip", "IP range (`CIDR`) the partner may certify; repeatable")
	fs.Var(&f.validity, "validity", "how long the partner's CA is valid (`DURATION`: 2y, 365d; never past this CA)")
	fs.Var(&f.keyType, "key-type", "key `type` of a key made here: "+pkiKeyTypeNames())
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	opts := pki.IntermediateOptions{
		CommonName: f.cn, Validity: time.Duration(f.validity), KeyType: pki.KeyType(f.keyType),
		Permit: pki.Constraints{DNS: f.permitDNS, URIDomains: f.permitURI, IPRanges: f.permitIP},
	}
	if opts.Permit.DNS == nil && opts.Permit.URIDomains == nil && opts.Permit.IPRanges == nil {
		return pkiUsageFail(env, fs, "give at least one --permit-dns, --permit-uri or --permit-ip: the names the partner's CA may certify")
	}
	if f.csr == "" && (f.out == "" || f.cn == "") {
		return pkiUsageFail(env, fs, "--cn NAME and --out DIR are required (or --csr FILE.csr to sign the partner's own key)")
	}
	parent, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "intermediate", err)
	}
	if f.csr != "" {
		return pkiIntermediateCSR(env, f, parent, opts)
	}
	ca, err := pki.InitIntermediate(f.out, parent, opts)
	if errors.Is(err, pki.ErrExists) {
		return pkiFail(env, "intermediate", fmt.Errorf("%v: choose another --out", err))
	}
	if err != nil {
		return pkiFail(env, "intermediate", err)
	}
	w := env.stdout
	pkiIntermediateSummary(w, ca.Cert, opts.Permit)
	fmt.Fprintf(w, "  %-28s the partner's CA folder: hand it over on a secure channel; the partner issues with\n", f.out)
	fmt.Fprintf(w, "  %-28s postern pki issue --dir %s --usage client --dns NAME\n", "", f.out)
	fmt.Fprintf(w, "  %-28s its CRL: give it to your agents as tls.crl besides %s\n", filepath.Join(f.out, pki.CRLFile), filepath.Join(f.dir, pki.CRLFile))
	fmt.Fprintf(w, "your agents keep trusting only %s\n", filepath.Join(f.dir, pki.CertFile))
	return 0
}

// pkiIntermediateCSR signs the partner CA's own key from a request.
func pkiIntermediateCSR(env pkiEnv, f pkiIntermediateFlags, parent *pki.CA, opts pki.IntermediateOptions) int {
	out := f.out
	if out == "" {
		out = strings.TrimSuffix(f.csr, filepath.Ext(f.csr))
	}
	crtPath := out + ".crt"
	if err := pkiCheckFree(crtPath); err != nil {
		return pkiFail(env, "intermediate", err)
	}
	csr, err := pkiReadRequest(f.csr)
	if err != nil {
		return pkiFail(env, "intermediate", err)
	}
	if opts.CommonName == "" {
		opts.CommonName = csr.Subject.CommonName
	}
	cert, err := parent.SignIntermediate(csr.PublicKey, opts)
	if err != nil {
		return pkiFail(env, "intermediate", fmt.Errorf("%s: %w", f.csr, err))
	}
	if err := pkiWriteNew(crtPath, pki.CertPEM(cert), 0o644); err != nil {
		return pkiFail(env, "intermediate", fmt.Errorf("%w (the certificate is signed and in %s; serial %s)", err, pki.IndexFile, pki.FormatSerial(cert.SerialNumber)))
	}
	w := env.stdout
	pkiIntermediateSummary(w, cert, opts.Permit)
	fmt.Fprintf(w, "  %-28s send it back: the partner puts it as ca.crt beside the key of the request, in its CA folder\n", crtPath)
	return 0
}

func pkiIntermediateSummary(w io.Writer, cert *x509.Certificate, permit pki.Constraints) {
	fmt.Fprintf(w, "issued intermediate CA %s, serial %s, valid until %s, path length 0\n", cert.Subject, pki.FormatSerial(cert.SerialNumber), pkiDate(cert.NotAfter))
	var permitted []string
	for _, d := range permit.DNS {
		permitted = append(permitted, "dns:"+d+" and *."+d)
	}
	for _, d := range permit.URIDomains {
		permitted = append(permitted, "uri:*://"+d+"/...")
	}
	for _, r := range permit.IPRanges {
		permitted = append(permitted, "ip:"+r.String())
	}
	fmt.Fprintf(w, "  may certify only: %s (other names are refused in the handshake; CN and OU are not constrained)\n", strings.Join(permitted, ", "))
	fmt.Fprintf(w, "  scope allow entries to it with: from ca:sha256:%s\n", identity.Fingerprint(cert))
}

// pkiCIDRFlag collects IP ranges.
type pkiCIDRFlag []*net.IPNet

func (l *pkiCIDRFlag) String() string { return fmt.Sprint([]*net.IPNet(*l)) }
func (l *pkiCIDRFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		_, n, err := net.ParseCIDR(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an IP range: write it like 192.0.2.0/24", v)
		}
		if ip4 := n.IP.To4(); ip4 != nil {
			n.IP, n.Mask = ip4, n.Mask[len(n.Mask)-4:]
		}
		*l = append(*l, n)
	}
	return nil
}
