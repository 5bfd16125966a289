//go:build !unix

package pki

import (
	"io/fs"
	"os"
)

// keepOwner does nothing here: the new file inherits the folder's ACL.
func keepOwner(f *os.File, old fs.FileInfo) {}
