package config

import (
	"os"
	"path/filepath"
)

// DefaultPath is the config file commands read when given no -c: where the
// MSI installs it, %ProgramData%\Postern\postern.toml.
func DefaultPath() string {
	dir := os.Getenv("ProgramData")
	if dir == "" {
		dir = `C:\ProgramData`
	}
	return filepath.Join(dir, "Postern", "postern.toml")
}
