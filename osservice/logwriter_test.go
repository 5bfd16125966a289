package osservice

import (
	"fmt"
	"slices"
	"testing"
)

func TestLineWriter(t *testing.T) {
	var lines []string
	w := &lineWriter{emit: func(l string) { lines = append(lines, l) }}
	for _, chunk := range []string{"first li", "ne\r\nsecond\n\nthird", " line\n", "unfinished"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if want := []string{"first line", "second", "third line"}; !slices.Equal(lines, want) {
		t.Errorf("lines %q, want %q", lines, want)
	}
}

func TestLineLevel(t *testing.T) {
	tests := []struct {
		line string
		want int
	}{
		{`time=2026-01-01T00:00:00Z level=INFO msg="agent hub running"`, levelInfo},
		{`time=2026-01-01T00:00:00Z level=WARN msg="tunnel hub: retrying"`, levelWarning},
		{`time=2026-01-01T00:00:00Z level=ERROR msg="tunnel hub: certificate expired"`, levelError},
		{`{"time":"2026-01-01T00:00:00Z","level":"ERROR","msg":"x"}`, levelError},
		{`{"time":"2026-01-01T00:00:00Z","level":"WARN","msg":"x"}`, levelWarning},
		{`postern: config postern.toml:3:1: unknown key "x"`, levelInfo},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.want), func(t *testing.T) {
			if got := lineLevel(tt.line); got != tt.want {
				t.Errorf("lineLevel(%q) = %d, want %d", tt.line, got, tt.want)
			}
		})
	}
}
