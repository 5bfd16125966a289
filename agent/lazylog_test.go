package agent

import (
	"bytes"
	"log/slog"
	"testing"
)

// A lazy logger writes what slog's own With would have written: the same
// attributes in the same order, groups included, and nothing for a level
// that is off.
func TestLazyLogWritesWhatWithWrites(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	for _, tc := range []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"attrs", func(l *slog.Logger) {
			l.With("stream", 7, "peer", "dns:a.test").With("service", "erp").Info("stream refused", "reason", "no such service")
		}},
		{"group", func(l *slog.Logger) {
			l.With("stream", 7).WithGroup("g").With("k", "v").Warn("line", "n", 1)
		}},
		{"level off", func(l *slog.Logger) { l.With("stream", 7).Debug("not written") }},
		{"no attrs", func(l *slog.Logger) { l.Info("plain") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want, got bytes.Buffer
			opts := &slog.HandlerOptions{ReplaceAttr: noTime}
			tc.log(slog.New(slog.NewTextHandler(&want, opts)))
			tc.log(lazyLog(slog.New(slog.NewTextHandler(&got, opts))))
			if got.String() != want.String() {
				t.Errorf("lazy logger wrote %q, want %q", got.String(), want.String())
			}
		})
	}
}
