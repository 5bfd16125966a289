package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/postern-tunnel/postern/config"
)

// defaultConfigPath is config.DefaultPath; tests point it elsewhere.
var defaultConfigPath = config.DefaultPath

// configPath is the -c value of a command that may run without it (check,
// status, reload): the platform's default file, announced on w so the
// reader knows which file was read.
func configPath(flagValue, command string, w io.Writer) string {
	if flagValue != "" {
		return flagValue
	}
	path := defaultConfigPath()
	fmt.Fprintf(w, "postern %s: reading %s (the default; -c FILE reads another)\n", command, path)
	return path
}

// loadConfig is config.Load with a message that says what to do when the
// default file is not there.
func loadConfig(path string, defaulted bool) (*config.Config, error) {
	cfg, err := config.Load(path)
	if defaulted && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config %s: no such file (the default path): pass -c FILE with your config", path)
	}
	return cfg, err
}
