package osservice

import (
	"io"

	"golang.org/x/sys/windows"
)

// LogWriter is where the agent running as the service name should write its
// log. Under the Service Control Manager a service has no stderr: there it
// is the Event Log (Application, source name), one event per line at the
// line's level. In a console it is stderr.
func LogWriter(name string, stderr io.Writer) io.Writer {
	h, err := windows.GetStdHandle(windows.STD_ERROR_HANDLE)
	if err == nil && h != 0 && h != windows.InvalidHandle {
		return stderr
	}
	return eventLogWriter(eventLog(name, stderr))
}

// eventLogWriter writes each log line to l at the line's level.
func eventLogWriter(l logger) io.Writer {
	return &lineWriter{emit: func(line string) {
		switch lineLevel(line) {
		case levelError:
			l.Error(line)
		case levelWarning:
			l.Warning(line)
		default:
			l.Info(line)
		}
	}}
}
