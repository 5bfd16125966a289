//go:build unix

package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestShareKeyWithGroup(t *testing.T) {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("no name for gid %d: %v", os.Getgid(), err)
	}
	path := filepath.Join(t.TempDir(), "site.key")
	os.WriteFile(path, []byte("key"), 0o600)
	if err := shareKeyWithGroup(path, g.Name); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 || int(fi.Sys().(*syscall.Stat_t).Gid) != os.Getgid() {
		t.Fatalf("mode %v gid %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	if err := shareKeyWithGroup(path, "no-such-group-postern"); err == nil {
		t.Fatal("unknown group accepted")
	}
}
