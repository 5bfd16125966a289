package agent

import (
	"errors"
	"time"
)

// errSecondSignal cuts every stream when a second stop signal arrives.
var errSecondSignal = errors.New("agent stopping: transfer cut by a second stop signal")

// Abort cuts every stream at once, as a second stop signal asks: each
// application connection is reset, so none mistakes the cut for a complete
// transfer. It waits at most a second for the resets to be sent.
func (a *Agent) Abort() {
	a.abortRelays(errSecondSignal)
	select {
	case <-a.streams.Idle():
	case <-time.After(time.Second):
	}
}

// ShutdownTimeout is how long a stop drains before the agent resets what
// is left (shutdown_timeout); a service manager's stop budget follows it.
func (a *Agent) ShutdownTimeout() time.Duration { return a.cfg.ShutdownTimeout.D() }
