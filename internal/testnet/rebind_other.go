//go:build !linux

package testnet

import "testing"

// RebindHost returns 127.0.0.1: elsewhere than Linux only that loopback
// address can be relied on (see the Linux RebindHost).
func RebindHost(t testing.TB) string { return "127.0.0.1" }

// HoldSourcePort does nothing here: RebindHost is 127.0.0.1, where a held
// source port would keep the server from its port.
func HoldSourcePort(t testing.TB, port int) {}
