//go:build !windows

package config

// DefaultPath is the config file commands read when given no -c: where the
// packages install it.
func DefaultPath() string { return "/etc/postern/postern.toml" }
