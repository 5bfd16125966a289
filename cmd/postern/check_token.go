package main

import (
	"encoding/pem"

	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
)

// checkToken reports on a cert or key that names a PKCS#11 token object:
// which token and object, and whether the PIN and the object were found.
// For a certificate it returns the certificate as PEM; for a key, the URI
// (what the rest of the check pairs with the certificate).
func checkToken(r *checkReport, role, value, at string) ([]byte, bool) {
	u, err := hsm.ParseURI(value)
	if err != nil {
		r.fail("%s %s (%s): %v", role, hsm.Redact(value), at, err)
		return nil, false
	}
	if role == "cert" {
		c, err := hsm.Certificate(u)
		if err != nil {
			r.fail("cert %s (%s): %v", u, at, err)
			return nil, false
		}
		r.ok("cert %s: found in token %q", u, u.Token)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), true
	}
	if u.PINSource != "" {
		if p := trust.KeyPermissionProblem(u.PINSource); p != "" {
			r.warn("pin-source %s: %s", u.PINSource, p)
		}
	}
	k, err := hsm.Open(u)
	if err != nil {
		r.fail("key %s (%s): %v", u, at, err)
		return nil, false
	}
	r.ok("key %s: found %s key in token %q (slot %d)", u, pki.KeyDescription(k.Public()), k.Token, k.Slot)
	return []byte(value), true
}

// checkName is a cert or key value as the report shows it: the path, or a
// pkcs11: URI without its module path and PIN source.
func checkName(v string) string {
	if !hsm.IsURI(v) {
		return v
	}
	if u, err := hsm.ParseURI(v); err == nil {
		return u.String()
	}
	return hsm.Redact(v)
}

// tokenFiles replaces each pkcs11: URI in paths by the files it makes the
// agent read: the module and the PIN file.
func tokenFiles(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !hsm.IsURI(p) {
			out = append(out, p)
			continue
		}
		if u, err := hsm.ParseURI(p); err == nil {
			out = append(out, u.ModulePath, u.PINSource)
		}
	}
	return out
}
