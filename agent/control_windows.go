package agent

// runtimeDir is "" on Windows: the control socket goes beside the config
// file (ProgramData\Postern), whose folder's access rules guard it.
func runtimeDir() string { return "" }

// secureSocket does nothing on Windows: the socket file takes the access
// rules of its folder.
func secureSocket(path string) error { return nil }
