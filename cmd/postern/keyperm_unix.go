//go:build unix

package main

import (
	"fmt"
	"os"
)

// keyPermissionProblem says what is wrong with a private key file's mode:
// anyone but its owner may read it.
func keyPermissionProblem(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if mode := fi.Mode().Perm(); mode&0o044 != 0 {
		return fmt.Sprintf("readable by group or others (mode %04o): chmod 600 %s", mode, path)
	}
	return ""
}
