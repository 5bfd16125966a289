//go:build !windows

package agent

import "os"

// runtimeDir is where the control socket goes first: /run/postern, when it
// exists (the systemd unit's RuntimeDirectory). An agent that may not
// write there falls back to the folder of its config file.
func runtimeDir() string {
	const dir = "/run/postern"
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return ""
	}
	return dir
}

// secureSocket lets the socket's owner and group use it, and no one else.
func secureSocket(path string) error { return os.Chmod(path, 0o660) }
