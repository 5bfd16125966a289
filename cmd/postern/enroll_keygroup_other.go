//go:build !unix

package main

import "fmt"

// shareKeyWithGroup is Unix only: elsewhere the key file inherits its
// folder's ACL.
func shareKeyWithGroup(path, group string) error {
	return fmt.Errorf("--key-group %s: not on this system: the key %s inherits its folder's permissions", group, path)
}
