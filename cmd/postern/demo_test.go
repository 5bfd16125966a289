package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestDemoSelftest runs the demo's two agents and legacy app and makes one
// request through the tunnel.
func TestDemoSelftest(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), demoFlags{port: 0, selftest: true}, &out, io.Discard); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"200 OK", "Hello from the legacy app", "through a Postern tunnel"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
