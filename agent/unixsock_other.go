//go:build !windows

package agent

import (
	"errors"
	"syscall"
)

// connRefused reports whether dialing a socket file found nothing
// listening on it.
func connRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
