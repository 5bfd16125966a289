//go:build linux || windows

package osservice

// nameFlag is the --name flag a command needs to reach service name.
func nameFlag(name string) string {
	if name == DefaultName {
		return ""
	}
	return " --name " + name
}
