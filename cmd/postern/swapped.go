package main

import (
	"errors"
	"fmt"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/trust"
)

// withSwapLines adds to a "cert and key are swapped" error the lines of
// the config that set the two paths, which the agent's message (naming the
// [[server]] or [[client]] table) does not give.
func withSwapLines(cfg *config.Config, err error) error {
	var se *trust.SwappedError
	if !errors.As(err, &se) {
		return err
	}
	for i, s := range cfg.Servers {
		if s.Cert == se.Cert && s.Key == se.Key {
			return fmt.Errorf("%w (cert set at %s, key at %s)", err, cfg.TLSKeyAt("server", i, "cert"), cfg.TLSKeyAt("server", i, "key"))
		}
	}
	for i, c := range cfg.Clients {
		if c.Cert == se.Cert && c.Key == se.Key {
			return fmt.Errorf("%w (cert set at %s, key at %s)", err, cfg.TLSKeyAt("client", i, "cert"), cfg.TLSKeyAt("client", i, "key"))
		}
	}
	return err
}
