//go:build !linux

package server

import "net"

// deferAccept does nothing here: TCP_DEFER_ACCEPT is Linux's.
func deferAccept(net.Listener, int) error { return nil }
