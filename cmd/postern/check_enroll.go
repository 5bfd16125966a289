package main

import (
	"errors"
	"os"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
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
