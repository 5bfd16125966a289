//go:build unix

package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// shareKeyWithGroup gives the key file to group with mode 0640, as
// docs/install.md installs keys for the service's group (root:postern).
// The key was written 0600, so it is never readable by more than that.
func shareKeyWithGroup(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("--key-group %s: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("--key-group %s: gid %q: %w", group, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("--key-group %s: key %s: %w", group, path, err)
	}
	return os.Chmod(path, 0o640)
}
