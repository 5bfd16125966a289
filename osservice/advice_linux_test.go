package osservice

import (
	"errors"
	"strings"
	"testing"
)

// TestExistingUnitAdvice: install and uninstall agree about a unit the
// package installed, and each says what to do.
func TestExistingUnitAdvice(t *testing.T) {
	const advice = "to stop using it, run `systemctl disable --now postern`, or remove the package (apt remove postern, or dnf remove postern); `postern service install` and `uninstall` manage only units in /etc/systemd/system"
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"install over a packaged unit", existingUnitError("postern", "/lib/systemd/system/postern.service"),
			`install service "postern": already installed by a package (/lib/systemd/system/postern.service): ` + advice},
		{"uninstall a packaged unit", packagedUnitError("postern", "/lib/systemd/system/postern.service"),
			`uninstall service "postern": /lib/systemd/system/postern.service comes from a package: ` + advice},
		{"install over an installed unit", existingUnitError("partner-a", "/etc/systemd/system/partner-a.service"),
			"install service \"partner-a\": already installed (/etc/systemd/system/partner-a.service): remove it first with `postern service uninstall --name partner-a`, or choose another --name"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%s:\n got  %s\n want %s", tc.name, got, tc.want)
		}
	}
	if !errors.Is(existingUnitError("postern", "/lib/systemd/system/postern.service"), ErrExists) {
		t.Error("not ErrExists")
	}
}

// TestDescribeWarnings: --print says what install would refuse.
func TestDescribeWarnings(t *testing.T) {
	c := packagedConfig()
	if w := DescribeWarnings(c); len(w) != 0 {
		t.Errorf("packaged paths: %q", w)
	}
	c.ConfigPath = "/tmp/x/postern.toml"
	w := DescribeWarnings(c)
	want := "/tmp/x/postern.toml is under /tmp, which the service cannot see (ProtectHome=, PrivateTmp=): move it, e.g. to /usr/local/bin or /etc/postern; install refuses this"
	if len(w) != 1 || w[0] != want {
		t.Errorf("got %q\nwant %q", w, want)
	}
	if err := checkVisible(c.ConfigPath); err == nil || !strings.HasPrefix(want, err.Error()) {
		t.Errorf("install says %v", err)
	}
}
