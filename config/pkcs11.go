package config

import (
	"fmt"

	"github.com/postern-tunnel/postern/hsm"
)

// validateTokens checks every cert and key that names a PKCS#11 token
// object (a value starting with pkcs11:): the URI syntax, an absolute
// module-path, and for keys a pin-source file. A PIN written into the
// config (pin-value) is refused, as inline proxy passwords are.
func (c *Config) validateTokens() error {
	check := func(table, where, key, value string) error {
		if !hsm.IsURI(value) {
			return nil
		}
		line := c.lines[table][key]
		if line == 0 {
			line = c.lines["tls"][key]
		}
		u, err := hsm.ParseURI(value)
		if err != nil {
			return c.errorf(line, "%s: %s: %s: PKCS#11 URI: %v", where, key, hsm.Redact(value), err)
		}
		if u.PINValue != "" {
			return c.errorf(line, "%s: %s: %s: pin-value puts the token PIN in the config: write the PIN to a file only postern can read and use pin-source=file:/etc/postern/token.pin instead", where, key, u)
		}
		if key == "key" && u.PINSource == "" {
			return c.errorf(line, "%s: %s: %s: no pin-source: add &pin-source=file:/etc/postern/token.pin (a file holding the token's user PIN)", where, key, u)
		}
		return nil
	}
	both := func(table, where string, t TLS) error {
		if err := check(table, where, "cert", t.Cert); err != nil {
			return err
		}
		return check(table, where, "key", t.Key)
	}
	for i, s := range c.Servers {
		if err := both(fmt.Sprintf("server#%d", i), fmt.Sprintf("server %s", s.Listen), s.TLS); err != nil {
			return err
		}
	}
	for i, cl := range c.Clients {
		if err := both(fmt.Sprintf("client#%d", i), fmt.Sprintf("client %q", cl.Name), cl.TLS); err != nil {
			return err
		}
	}
	return nil
}
