package main

import (
	"flag"
	"fmt"

	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

// pkiRequestToken is `postern pki request --key pkcs11:...`: the key is
// made inside the token (or, with --renew, the one there is kept) and only
// the request is written.
func pkiRequestToken(env pkiEnv, fs *flag.FlagSet, f pkiRequestFlags) int {
	if !hsm.IsURI(f.token) {
		return pkiUsageFail(env, fs, fmt.Sprintf("--key %s: only a pkcs11: URI goes here; without --key, request makes PREFIX.key itself", f.token))
	}
	u, err := hsm.ParseURI(f.token)
	if err != nil {
		return pkiUsageFail(env, fs, fmt.Sprintf("--key %s: %v", hsm.Redact(f.token), err))
	}
	names := f.names.names()
	if f.renew && f.out != "" && pkiNoNames(names) {
		if cert, err := pkiReadCert(f.out + ".crt"); err == nil {
			names = pkiNamesOf(cert)
		}
	}
	out, err := pkiOutPrefix(f.out, names)
	if err != nil {
		return pkiUsageFail(env, fs, err.Error())
	}
	csrPath := out + ".csr"
	write := pkiWriteNew
	var key *hsm.Key
	if f.renew {
		write = pki.ReplaceFile
		key, err = hsm.Open(u)
	} else {
		if err := pkiCheckFree(csrPath); err != nil {
			return pkiFail(env, "request", err)
		}
		key, err = hsm.Generate(u, string(f.keyType))
	}
	if err != nil {
		return pkiFail(env, "request", fmt.Errorf("--key %s: %w", u, err))
	}
	csrPEM, err := pki.Request(names, key)
	if err != nil {
		return pkiFail(env, "request", err)
	}
	if err := write(csrPath, csrPEM, 0o644); err != nil {
		return pkiFail(env, "request", err)
	}
	csr, _ := pki.ParseRequestPEM(csrPEM)
	w := env.stdout
	verb := "made a private key"
	if f.renew {
		verb = "kept the private key"
	}
	fmt.Fprintf(w, "%s (%s) inside token %q (slot %d) as %s, and a certificate request for %s\n",
		verb, pki.KeyDescription(csr.PublicKey), key.Token, key.Slot, u.ObjectName(), csr.Subject)
	fmt.Fprintf(w, "  %-24s send this to the CA operator (it holds no secret)\n", csrPath)
	fmt.Fprintf(w, "the key never leaves the token: in [tls] write key = %q\n", hsm.Redact(f.token))
	spki, _ := identity.KeyHash(csr.PublicKey)
	fmt.Fprintf(w, "the signed certificate must show spki:%s (check with `postern pki show`)\n", spki)
	return 0
}
