package agent

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// relay, tunnel and listener must stop when its agent does.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
