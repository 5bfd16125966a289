package agent

import (
	"errors"
	"syscall"
)

// wsaeconnrefused is Winsock's "connection refused", which a socket file
// nothing listens on answers.
const wsaeconnrefused = syscall.Errno(10061)

// connRefused reports whether dialing a socket file found nothing
// listening on it.
func connRefused(err error) bool {
	return errors.Is(err, wsaeconnrefused) || errors.Is(err, syscall.ECONNREFUSED)
}
