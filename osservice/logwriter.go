package osservice

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// lineWriter cuts what is written into lines and hands each complete one to
// emit; slog writes one record per Write, but nothing here relies on that.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(line string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.emit(line)
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

var _ io.Writer = (*lineWriter)(nil)

// Levels of a log line, as the Event Log has them.
const (
	levelInfo = iota
	levelWarning
	levelError
)

// lineLevel reads the level of a log/slog line in text or JSON form.
func lineLevel(line string) int {
	switch {
	case strings.Contains(line, "level=ERROR"), strings.Contains(line, `"level":"ERROR"`):
		return levelError
	case strings.Contains(line, "level=WARN"), strings.Contains(line, `"level":"WARN"`):
		return levelWarning
	}
	return levelInfo
}
