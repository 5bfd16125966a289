//go:build !linux

package service

// DescribeWarnings has nothing to say outside Linux: Windows services see
// every path the installing user sees.
func DescribeWarnings(c Config) []string { return nil }
