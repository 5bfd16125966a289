package agent

import (
	"bytes"
	"testing"
)

// TestProxyHeaderAddresses: what each PROXY header version says for the
// address forms an open request can carry: IPv4, IPv6, an IPv4 source
// with an IPv6 destination, and none (an app on a Unix socket).
func TestProxyHeaderAddresses(t *testing.T) {
	tests := []struct {
		name, source, dest string
		v1                 string
		v2Family           byte // high nibble AF, low nibble transport; 0 = UNSPEC
		v2Command          byte // 0x20 LOCAL, 0x21 PROXY
	}{
		{"IPv4", "192.0.2.1:5000", "198.51.100.2:443", "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n", 0x11, 0x21},
		{"IPv6", "[2001:db8::1]:5000", "[::1]:443", "PROXY TCP6 2001:db8::1 ::1 5000 443\r\n", 0x21, 0x21},
		{"mixed", "192.0.2.1:5000", "[::1]:443", "PROXY TCP6 ::ffff:192.0.2.1 ::1 5000 443\r\n", 0x21, 0x21},
		{"unix socket app", "", "", "PROXY UNKNOWN\r\n", 0x00, 0x20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := proxyOrigin{source: tt.source, dest: tt.dest}
			h, err := o.header(1)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if _, err := h.WriteTo(&b); err != nil {
				t.Fatalf("v1: %v", err)
			}
			if b.String() != tt.v1 {
				t.Errorf("v1 header %q, want %q", b.String(), tt.v1)
			}
			if h, err = o.header(2); err != nil {
				t.Fatal(err)
			}
			b.Reset()
			if _, err := h.WriteTo(&b); err != nil {
				t.Fatalf("v2: %v", err)
			}
			if raw := b.Bytes(); len(raw) < 16 || raw[12] != tt.v2Command || raw[13] != tt.v2Family {
				t.Errorf("v2 header % x: want command %#x, family %#x", raw, tt.v2Command, tt.v2Family)
			}
		})
	}
}
