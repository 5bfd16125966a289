package trust

import (
	"crypto/x509"
)

// Pushed CRLs: revocation lists a peer's [ca] sent over a tunnel (the
// agent keeps them next to its files, see agent/crlpush.go). Their
// signature is checked against the CA bundle like a crl file's; they
// revoke like one, but a pushed CRL past its next update never refuses a
// handshake by itself: the agent did not ask for CRL checking, and a hub
// out of reach must not lock its sites out.

// VerifyCRL parses a CRL (PEM or DER) and checks its signature against
// cas. source names where it came from in errors and refusals.
func VerifyCRL(source string, data []byte, cas []*x509.Certificate) ([]*CRL, error) {
	return parseCRLFile(source, data, cas)
}

// SetPushed replaces the pushed CRLs the credentials check peers against,
// in handshakes and in Recheck.
func (c *Credentials) SetPushed(crls []*CRL) {
	c.pushed.Store(&crls)
}

// Pushed returns the pushed CRLs in use.
func (c *Credentials) Pushed() []*CRL {
	if p := c.pushed.Load(); p != nil {
		return *p
	}
	return nil
}

// checkPushed reports the first certificate of chains a pushed CRL revokes.
func (c *Credentials) checkPushed(chains [][]*x509.Certificate) error {
	crls := c.Pushed()
	if len(crls) == 0 {
		return nil
	}
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			for _, crl := range crls {
				if !crl.covers(chain[i+1]) {
					continue
				}
				if e, ok := crl.lookup(chain[i].SerialNumber); ok {
					return &RevokedError{Cert: chain[i], Source: "CRL " + crl.Path, At: e.RevocationTime, Reason: e.ReasonCode}
				}
			}
		}
	}
	return nil
}
