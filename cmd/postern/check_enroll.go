package main

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
)

// enrollPending reports (and says) that t's certificate does not exist yet
// because `postern run` will enroll first with [enroll] token_file; the
// token is checked instead of the files.
func enrollPending(r *checkReport, cfg *config.Config, t config.TLS) bool {
	e := cfg.Enroll
	if e == nil || t.Cert != cfg.TLS.Cert {
		return false
	}
	if _, err := os.Stat(t.Cert); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	text, err := readToken(e.TokenFile)
	if err != nil {
		r.fail("cert %s: not enrolled yet, and %v", t.Cert, err)
		return true
	}
	tok, err := pki.ParseToken(text)
	switch {
	case err != nil:
		r.fail("[enroll] token_file %s: %v", e.TokenFile, err)
	case r.now.After(tok.Expires):
		r.fail("[enroll] token_file %s: invitation %s expired on %s: ask the hub's operator for a new one", e.TokenFile, tok.IDString(), tok.Expires.Format(time.RFC3339))
	default:
		r.note("cert %s: not enrolled yet; `postern run` enrolls first with hub %s (invitation %s, until %s)", t.Cert, tok.Hub, tok.IDString(), tok.Expires.Format(time.RFC3339))
	}
	return true
}

// checkCA checks a hub's [ca]: the CA folder opens (certificate and key
// belong together), each [[server]] certificate verifies under it (or an
// enrolling site refuses the hub), and what invitations wait.
func checkCA(r *checkReport, cfg *config.Config) {
	a := cfg.CA
	if a == nil {
		return
	}
	r.section("ca %s", a.Dir)
	ca, err := pki.Open(a.Dir)
	if err != nil {
		r.fail("[ca] dir %s: %v (make it with `postern pki init --dir %s`)", a.Dir, err, a.Dir)
		return
	}
	sum := sha256.Sum256(ca.Cert.Raw)
	r.ok("CA %q (sha256:%x) signs for its sites (enrollment); valid until %s", ca.Cert.Subject.CommonName, sum[:8], pkiDate(ca.Cert.NotAfter))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, s := range cfg.Servers {
		if s.TLS.Cert == "" || strings.HasPrefix(s.TLS.Cert, "pkcs11:") {
			continue
		}
		if bundle, err := trust.LoadCACerts(s.TLS.CA); err == nil && !slices.ContainsFunc(bundle, func(c *x509.Certificate) bool {
			return c.Equal(ca.Cert) || ca.Cert.CheckSignatureFrom(c) == nil // [ca] may be an intermediate of a trusted root
		}) {
			r.warn("[[server]] %s: its ca %s lacks the CA in [ca] dir: sites enrolled here would be refused by it; add %s to that bundle", s.Listen, s.TLS.CA, filepath.Join(a.Dir, pki.CertFile))
		}
		chain, err := trust.LoadCACerts(s.TLS.Cert)
		if err != nil {
			continue // the server's own section says why
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			r.warn("[[server]] %s: its certificate %s is not from this CA (%v): a site enrolling there refuses the hub, since its token names this CA", s.Listen, s.TLS.Cert, err)
		}
	}
	invs, bad, err := pki.Invitations(a.Dir)
	if err != nil {
		r.fail("[ca] dir %s: invitations: %v", a.Dir, err)
		return
	}
	var open, used, expired int
	for _, inv := range invs {
		switch {
		case inv.UsedAt != nil:
			used++
		case r.now.After(inv.ExpiresAt):
			expired++
		default:
			open++
		}
	}
	r.note("invitations: %d open, %d used, %d expired", open, used, expired)
	if bad > 0 {
		r.warn("invitations: %d record(s) in %s do not read: those invitations cannot be redeemed", bad, filepath.Join(a.Dir, pki.InvitationsDir))
	}
}
