//go:build !linux && !windows

package osservice

import (
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("services are supported on Linux (systemd) and Windows, not %s: run `postern run -c FILE` under your init system", runtime.GOOS)

// Describe, Install and the controls are not available on this OS.
func Describe(c Config) (string, error)                  { return "", errUnsupported }
func Install(c Config, warnf func(string, ...any)) error { return errUnsupported }
func Uninstall(name string) error                        { return errUnsupported }
func Start(name string) error                            { return errUnsupported }
func Stop(name string) error                             { return errUnsupported }
func Restart(name string) error                          { return errUnsupported }
func Status(name string) (State, error)                  { return StateUnknown, errUnsupported }

func Configure(name string, delayedStart bool, warnf func(string, ...any)) error {
	return errUnsupported
}
