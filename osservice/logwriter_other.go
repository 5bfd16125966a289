//go:build !windows

package osservice

import "io"

// LogWriter is where the agent running as the service name should write its
// log: stderr, which systemd puts in the journal.
func LogWriter(name string, stderr io.Writer) io.Writer { return stderr }
