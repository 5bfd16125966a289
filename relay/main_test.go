package relay

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a relay, a yamux session or a
// test helper leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
