package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
)

// TestUnixAndIPv6Addresses: a forward may listen on, and a service target,
// a Unix socket; a relative socket path is resolved against the config's
// folder like other paths. IPv6 literals stay as written.
func TestUnixAndIPv6Addresses(t *testing.T) {
	c, dir, err := parse(t, validClient+`[[forward]]
listen = "unix:run/app.sock"
service = "app"
via = "hub"
[[forward]]
listen = "unix:/run/postern/b.sock"
mode = "0666"
service = "b"
via = "hub"
[[forward]]
listen = "[::1]:15432"
service = "db"
via = "hub"
[[service]]
name = "legacy"
target = "unix:/run/legacy.sock"
[[service]]
name = "v6"
target = "[2001:db8::5]:5432"
`)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		got           config.Address
		network, addr string
	}{
		{c.Forwards[0].Listen, "unix", filepath.Join(dir, "run/app.sock")},
		{c.Forwards[1].Listen, "unix", "/run/postern/b.sock"},
		{c.Forwards[2].Listen, "tcp", "[::1]:15432"},
		{c.Services[0].Target, "unix", "/run/legacy.sock"},
		{c.Services[1].Target, "tcp", "[2001:db8::5]:5432"},
	}
	for _, ck := range checks {
		if ck.got.Network() != ck.network || ck.got.NetAddr() != ck.addr {
			t.Errorf("%s: network %s, address %s; want %s, %s", ck.got, ck.got.Network(), ck.got.NetAddr(), ck.network, ck.addr)
		}
	}
	if m := c.Forwards[0].UnixMode(); m != 0o660 {
		t.Errorf("default mode %o, want 660", m)
	}
	if m := c.Forwards[1].UnixMode(); m != 0o666 {
		t.Errorf("mode %o, want 666", m)
	}
}

func TestUnixErrors(t *testing.T) {
	long := "/run/" + strings.Repeat("x", 100) + ".sock"
	fwd := func(listen, extra string) string {
		return validClient + "[[forward]]\nlisten = \"" + listen + "\"\nservice = \"a\"\nvia = \"hub\"\n" + extra
	}
	tests := []struct{ name, text, want string }{
		{"empty path", fwd("unix:", ""),
			`config FILE:9:10: forward.listen: "unix:": no socket path after "unix:", like "unix:/run/postern/app.sock"`},
		{"path too long", fwd("unix:"+long, ""),
			`config FILE:8: forward unix:` + long + `: listen: socket path "` + long + `" is 110 bytes; sockets take at most 103: use a shorter path (like /run/postern/NAME.sock)`},
		{"target too long", validClient + "[[service]]\nname = \"a\"\ntarget = \"unix:" + long + "\"\n",
			`config FILE:8: service "a": target: socket path "` + long + `" is 110 bytes; sockets take at most 103: use a shorter path (like /run/postern/NAME.sock)`},
		{"mode on TCP", fwd("127.0.0.1:1", "mode = \"0660\"\n"),
			`config FILE:8: forward 127.0.0.1:1: mode "0660": only a Unix socket (listen = "unix:PATH") has a mode`},
		{"mode not octal", fwd("unix:/run/a.sock", "mode = \"rw-rw----\"\n"),
			`config FILE:8: forward unix:/run/a.sock: mode "rw-rw----": write the socket's permission bits in octal, like "0660"`},
		{"mode too large", fwd("unix:/run/a.sock", "mode = \"4770\"\n"),
			`config FILE:8: forward unix:/run/a.sock: mode "4770": write the socket's permission bits in octal, like "0660"`},
		{"mode locks out the owner", fwd("unix:/run/a.sock", "mode = \"0060\"\n"),
			`config FILE:8: forward unix:/run/a.sock: mode "0060": the owner needs read and write (0600) to use the socket`},
		{"server on a socket", validClient + "[[server]]\nlisten = \"unix:/run/s.sock\"\n",
			`config FILE:8: server unix:/run/s.sock: "unix:/run/s.sock": listen is a TCP host:port; Unix sockets are for a [[forward]]'s listen and a [[service]]'s target`},
		{"client to a socket", strings.Replace(validClient, `"hub.example.com:7443"`, `"unix:/run/s.sock"`, 1),
			`config FILE:7:1: client "hub": "unix:/run/s.sock": servers is a TCP host:port; Unix sockets are for a [[forward]]'s listen and a [[service]]'s target`},
		{"admin on a socket", "[admin]\nlisten = \"unix:/run/a.sock\"\n" + validClient,
			`config FILE: "unix:/run/a.sock": admin.listen is a TCP host:port; Unix sockets are for a [[forward]]'s listen and a [[service]]'s target`},
		{"same socket twice", fwd("unix:a.sock", "") + "[[forward]]\nlisten = \"unix:a.sock\"\nservice = \"b\"\nvia = \"hub\"\n",
			`config FILE:12: forward unix:DIR/a.sock: listen address already used by the forward on line 8`},
		{"IPv6 without brackets", fwd("::1:7445", ""),
			`config FILE:9:10: forward.listen: "::1:7445": too many colons in address: did you mean "[::1]:7445"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir, err := parse(t, tt.text)
			if err == nil {
				t.Fatalf("Parse succeeded, want error\n%s", tt.want)
			}
			want := strings.ReplaceAll(tt.want, "FILE", filepath.Join(dir, "postern.toml"))
			want = strings.ReplaceAll(want, "DIR", dir)
			if err.Error() != want {
				t.Errorf("error:\n got  %s\n want %s", err, want)
			}
		})
	}
}
