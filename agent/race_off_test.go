//go:build !race

package agent

// raceDetector: see race_on_test.go.
const raceDetector = false
