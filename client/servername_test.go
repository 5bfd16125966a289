package client

import "testing"

func TestServerNameOf(t *testing.T) {
	for addr, want := range map[string]string{
		"hub.example.com:7443":  "hub.example.com",
		"192.0.2.7:7443":        "192.0.2.7",
		"[::1]:7443":            "::1",
		"[2001:db8::1]:7443":    "2001:db8::1",
		"[2001:DB8:0::1]:7443":  "2001:db8::1",
		"[fe80::1%eth0]:7443":   "fe80::1",
		"[::ffff:192.0.2.7]:80": "::ffff:192.0.2.7",
		"localhost:7443":        "localhost",
		"no-port":               "",
	} {
		if got := ServerNameOf(addr); got != want {
			t.Errorf("ServerNameOf(%q) = %q, want %q", addr, got, want)
		}
	}
}
