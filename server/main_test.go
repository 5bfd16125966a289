package server

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when Serve, a handshake or the
// refusal log's timer leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
