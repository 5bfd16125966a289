package config_test

import (
	"strings"
	"testing"
)

func TestServiceLimits(t *testing.T) {
	svc := "[[service]]\nname = \"erp-db\"\ntarget = \"10.0.0.5:5432\"\nallow = [\"dns:a.example.com\"]\n"
	c, _, err := parse(t, validClient+svc)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[0]
	if s.MaxStreamsPerPeer != 0 || s.MaxStreams != 0 || s.StreamsPerSecondPerPeer != 0 || s.StreamsPerSecond != 0 ||
		s.StreamsBurst != 0 || s.BandwidthPerPeer != 0 || s.Bandwidth != 0 {
		t.Errorf("limits default to %+v, want all 0 (off)", s)
	}
	c, _, err = parse(t, validClient+svc+`max_streams_per_peer = 4
max_streams = 100
streams_per_second_per_peer = 2.5
streams_per_second = 50
streams_burst = 10
bandwidth_per_peer = "10MiB"
bandwidth = 1000000
`)
	if err != nil {
		t.Fatal(err)
	}
	s = c.Services[0]
	if s.MaxStreamsPerPeer != 4 || s.MaxStreams != 100 || s.StreamsPerSecondPerPeer != 2.5 || s.StreamsPerSecond != 50 ||
		s.StreamsBurst != 10 || s.BandwidthPerPeer != 10<<20 || s.Bandwidth != 1000000 {
		t.Errorf("limits read as %+v", s)
	}
	for _, bad := range []struct{ text, want string }{
		{"max_streams_per_peer = -1\n", `service "erp-db": max_streams_per_peer: -1 must be a positive number`},
		{"streams_per_second = -0.5\n", `service "erp-db": streams_per_second: -0.5 must be a positive number`},
		{"streams_per_second = nan\n", `service "erp-db": streams_per_second: NaN must be a positive number`},
		{"streams_burst = 3\n", `service "erp-db": streams_burst is set but neither streams_per_second nor streams_per_second_per_peer is`},
		{"bandwidth = \"fast\"\n", `service.bandwidth: invalid size "fast"`},
	} {
		_, _, err := parse(t, validClient+svc+bad.text)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want it to contain %q", bad.text, err, bad.want)
		}
	}
}
