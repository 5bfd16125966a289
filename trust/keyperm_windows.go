package trust

// KeyPermissionProblem is not checked on Windows: access is governed by the
// file's ACL, which the installer sets (see docs/install.md).
func KeyPermissionProblem(path string) string { return "" }
