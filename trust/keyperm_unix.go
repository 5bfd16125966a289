//go:build unix

package trust

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// KeyPermissionProblem says what is wrong with a private key file's mode,
// or "" when nothing is. Readable by the owner is fine; readable by the
// group is fine when the group is the agent's own (the group this process
// runs as or belongs to, or the postern service group) and others have no
// access. `postern check`, the agent at start and each reload use it.
func KeyPermissionProblem(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	gid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		gid = int(st.Gid)
	}
	return keyModeProblem(path, fi.Mode().Perm(), gid, groupName(gid), ownGroup)
}

// keyModeProblem is the rule behind KeyPermissionProblem; own reports
// whether gid is a group the agent runs with.
func keyModeProblem(path string, mode os.FileMode, gid int, group string, own func(gid int) bool) string {
	switch {
	case mode&0o004 != 0:
		return fmt.Sprintf("readable by every user (mode %04o): chmod o-rwx %s", mode, path)
	case mode&0o003 != 0:
		return fmt.Sprintf("writable by every user (mode %04o): chmod o-rwx %s", mode, path)
	}
	if mode&0o070 == 0 || group == ServiceGroup || own(gid) {
		return ""
	}
	name := group
	if name == "" {
		name = strconv.Itoa(gid)
	}
	return fmt.Sprintf("readable by group %q (mode %04o), which this agent does not run as: chgrp %s %s, or chmod 600 %s when the agent runs as the file's owner",
		name, mode, ServiceGroup, path, path)
}

func ownGroup(gid int) bool {
	if gid == os.Getegid() || gid == os.Getgid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, gid)
}

func groupName(gid int) string {
	if gid < 0 {
		return ""
	}
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		return ""
	}
	return g.Name
}
