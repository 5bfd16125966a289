package osservice

import (
	"fmt"
	"path/filepath"
)

// Messages for a unit that is already there, shared by Install and
// Uninstall so the two say the same thing and name the same way out.

// existingUnitError is Install's answer when NAME.service exists at path.
func existingUnitError(name, path string) error {
	if filepath.Dir(path) != unitDir {
		return fmt.Errorf("install service %q: %w by a package (%s): %s", name, ErrExists, path, packagedAdvice(name))
	}
	return fmt.Errorf("install service %q: %w (%s): remove it first with `postern service uninstall%s`, or choose another --name",
		name, ErrExists, path, nameFlag(name))
}

// packagedUnitError is Uninstall's answer when NAME.service at path was put
// there by the deb or rpm package.
func packagedUnitError(name, path string) error {
	return fmt.Errorf("uninstall service %q: %s comes from a package: %s", name, path, packagedAdvice(name))
}

func packagedAdvice(name string) string {
	return fmt.Sprintf("to stop using it, run `systemctl disable --now %s`, or remove the package (apt remove postern, or dnf remove postern); "+
		"`postern service install` and `uninstall` manage only units in %s", name, unitDir)
}

// DescribeWarnings says what Install would refuse in c, for `install
// --print`, which changes nothing and so would otherwise stay silent.
func DescribeWarnings(c Config) []string {
	var warnings []string
	for _, p := range append([]string{c.Executable, c.ConfigPath}, c.Files...) {
		if err := checkVisible(p); err != nil {
			warnings = append(warnings, err.Error()+"; install refuses this")
		}
	}
	return warnings
}
