//go:build !unix

package testnet

import "testing"

// RefusedAddr returns a loopback TCP address where connections are
// refused: port 1 (tcpmux), where nothing listens.
func RefusedAddr(t testing.TB) string { return "127.0.0.1:1" }
