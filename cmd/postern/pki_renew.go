package main

import (
	"crypto"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/postern-tunnel/postern/pki"
)

// pkiRenewIssue is `pki issue --renew`: a new certificate for PREFIX, with
// the existing key unless --new-key, written over the old files atomically
// (with --new-key, key and certificate both or neither: pki.ReplacePair;
// modes and owners kept), so an agent that reloads sees either the old
// pair or the new one.
func pkiRenewIssue(env pkiEnv, fs *flag.FlagSet, f pkiIssueFlags) int {
	names := f.names.names()
	out := f.out
	if out == "" {
		var err error
		if out, err = pkiOutPrefix("", names); err != nil {
			return pkiUsageFail(env, fs, "--renew needs --out PREFIX (or --cn/--dns to name it): the PREFIX.crt to replace")
		}
	}
	crtPath, keyPath := out+".crt", out+".key"
	old, err := pkiReadCert(crtPath)
	if err != nil {
		return pkiFail(env, "issue", fmt.Errorf("--renew replaces an existing certificate, and %s cannot be read: %w; to make a first one, leave out --renew", crtPath, unwrapPath(err)))
	}
	if pkiNoNames(names) {
		names = pkiNamesOf(old)
	}
	usage := pki.Usage(f.usage)
	if usage == 0 {
		usage = pkiUsageOf(old)
	}
	if usage == 0 {
		return pkiUsageFail(env, fs, "--usage is required: the old certificate does not say (server, client or both)")
	}
	opts := pki.IssueOptions{Names: names, Usage: usage, Validity: time.Duration(f.validity), KeyType: pki.KeyType(f.keyType)}
	if !f.newKey {
		if opts.Key, err = pkiReadKey(keyPath); err != nil {
			return pkiFail(env, "issue", fmt.Errorf("--renew keeps the existing key: %w; to make a new key too, add --new-key", err))
		}
		if !pkiSameKey(opts.Key.Public(), old.PublicKey) {
			return pkiFail(env, "issue", fmt.Errorf("key %s does not belong to certificate %s: renew with the certificate's own key, or add --new-key", keyPath, crtPath))
		}
	}
	ca, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "issue", err)
	}
	certPEM, keyPEM, err := ca.Issue(opts)
	if err != nil {
		return pkiFail(env, "issue", err)
	}
	keyNote := "tls.key: kept (spki: pins on it still match)"
	if f.newKey {
		// Key and certificate both or neither: a new key beside the
		// old certificate is a pair no agent can start with.
		if err := pki.ReplacePair(keyPath, keyPEM, crtPath, certPEM); err != nil {
			return pkiFail(env, "issue", err)
		}
		keyNote = "tls.key: replaced by a new key (spki: pins on the old one no longer match)"
	} else if err := pki.ReplaceFile(crtPath, certPEM, 0o644); err != nil {
		return pkiFail(env, "issue", err)
	}
	pkiPrintIssued(env, "renewed", certPEM, crtPath, keyPath, keyNote)
	fmt.Fprintf(env.stdout, "replaced serial %s; running agents pick the new files up at their next reload (SIGHUP, or within reload_interval)\n", pki.FormatSerial(old.SerialNumber))
	return 0
}

// pkiReadKey reads a private key file.
func pkiReadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func pkiSameKey(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

func pkiNoNames(n pki.Names) bool {
	return n.CommonName == "" && len(n.DNSNames) == 0 && len(n.IPAddresses) == 0 && len(n.URIs) == 0 && len(n.OrganizationalUnit) == 0
}

// pkiNamesOf is the names a certificate carries, for renewing it as it is.
func pkiNamesOf(c *x509.Certificate) pki.Names {
	return pki.Names{CommonName: c.Subject.CommonName, OrganizationalUnit: c.Subject.OrganizationalUnit,
		DNSNames: c.DNSNames, IPAddresses: c.IPAddresses, URIs: c.URIs}
}

// pkiUsageOf is the side a certificate may serve, from its extended key usage.
func pkiUsageOf(c *x509.Certificate) pki.Usage {
	var u pki.Usage
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			u |= pki.UsageServer
		case x509.ExtKeyUsageClientAuth:
			u |= pki.UsageClient
		case x509.ExtKeyUsageAny:
			u |= pki.UsageBoth
		}
	}
	return u
}
