//go:build race

package agent

// raceDetector: the race detector's bookkeeping adds to each goroutine and
// allocation, so memory bounds measured without it get a margin with it.
const raceDetector = true
