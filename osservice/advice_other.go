//go:build !linux

package osservice

// DescribeWarnings has nothing to say outside Linux: Windows services see
// every path the installing user sees.
func DescribeWarnings(c Config) []string { return nil }
