package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string // "" when it must parse
	}{
		{"10s", 10 * time.Second, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"30d", 30 * day, ""},
		{" 30d ", 30 * day, ""},
		{"10y", 3650 * day, ""},
		{"0d", 0, ""},
		{"0", 0, ""},
		{"101y", 0, `invalid duration "101y": at most 100 years`},
		{"-5d", 0, `invalid duration "-5d": must not be negative`},
		{"-1h", 0, `invalid duration "-1h": must not be negative`},
		{"5w", 0, `invalid duration "5w": use a number with a unit: ms, s, m, h, d (days) or y (365 days)`},
		{"d", 0, `invalid duration "d": use a number with a unit`},
		{"1.5d", 0, `invalid duration "1.5d": use a number with a unit`},
		{"99999999999999d", 0, `invalid duration "99999999999999d"`},
	} {
		got, err := config.ParseDuration(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
			t.Errorf("ParseDuration(%q) = %v, %v; want an error starting %q", tc.in, got, err, tc.err)
		}
	}
}

// TestDurationDaysInConfig: a config key takes the same "30d" the pki
// commands take.
func TestDurationDaysInConfig(t *testing.T) {
	c, err := config.Parse("/x/postern.toml", []byte("[tls]\nexpiry_warning = \"14d\"\n"+validClient[len("[tls]\n"):]))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Clients[0].ExpiryWarning.D(); got != 14*24*time.Hour {
		t.Errorf("expiry_warning = %v, want 336h", got)
	}
}

// FuzzParseDuration: whatever parses is not negative, and its formatted
// form parses back to the same value.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"10s", "30d", "10y", "1h30m", "-1h", "5w", "0", "101y", "1.5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := config.ParseDuration(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid duration") {
				t.Fatalf("error %q does not say what is wrong", err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v: negative", s, d)
		}
		back, err := config.ParseDuration(config.FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("FormatDuration(%v) = %q parses to %v, %v", d, config.FormatDuration(d), back, err)
		}
	})
}
