package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
)

// siteConfig is the site side of DESIGN.md: it dials the hub and forwards a
// local port to a service there.
const siteConfig = `name = "site-a"

[tls]
cert = "certs/site-a.crt"
key  = "certs/site-a.key"
ca   = "certs/partners-ca.crt"
crl  = ["certs/partners-ca.crl", "/etc/postern/extra.crl"]

[[client]]
name = "hub"
servers = ["hub1.example.com:7443", "hub2.example.com:7443"]
server_name = "hub.example.com"
min_version = "1.2"

[[forward]]
listen  = "127.0.0.1:15432"
service = "erp-db"
via     = "hub"

[log]
level = "debug"
format = "json"
`

// hubConfig is the hub side: it accepts tunnels and offers the service.
const hubConfig = `name = "hub"
shutdown_timeout = "1m"

[tls]
cert = "hub.crt"
key  = "/etc/postern/hub.key"
ca   = "partners-ca.crt"

[tunnel]
stream_window = "4MiB"

[[server]]
listen = "0.0.0.0:7443"
cert = "hub-alt.crt"        # overrides [tls] cert
handshake_timeout = "5s"

[[service]]
name   = "erp-db"
target = "10.0.0.5:5432"
allow  = ["dns:partner-a.example.com", "uri:spiffe://example.com/partner-b", "cn:Legacy Gateway", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]

[admin]
listen = "127.0.0.1:9901"
`

func parse(t *testing.T, text string) (*config.Config, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.toml")
	c, err := config.Parse(path, []byte(text))
	return c, dir, err
}

func TestParseSite(t *testing.T) {
	c, dir, err := parse(t, siteConfig)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"name", c.Name, "site-a"},
		{"shutdown_timeout", c.ShutdownTimeout.D(), 30 * time.Second},
		{"tls.min_version", c.TLS.MinVersion, "1.3"},
		{"tls.cert", c.TLS.Cert, filepath.Join(dir, "certs", "site-a.crt")},
		{"tls.crl[0]", c.TLS.CRL[0], filepath.Join(dir, "certs", "partners-ca.crl")},
		{"tls.crl[1]", c.TLS.CRL[1], "/etc/postern/extra.crl"},
		{"tunnel.stream_window", c.Tunnel.StreamWindow, config.Size(16 << 20)},
		{"tunnel.keepalive_interval", c.Tunnel.KeepaliveInterval.D(), 10 * time.Second},
		{"tunnel.keepalive_timeout", c.Tunnel.KeepaliveTimeout.D(), 10 * time.Second},
		{"tunnel.open_timeout", c.Tunnel.OpenTimeout.D(), 10 * time.Second},
		{"tunnel.max_streams", c.Tunnel.MaxStreams, 16384},
		{"tunnel.write_timeout", c.Tunnel.WriteTimeout.D(), 60 * time.Second},
		{"tunnel.max_buffered", c.Tunnel.MaxBuffered, config.Size(1 << 30)},
		{"tunnel.max_tunnel_buffered", c.Tunnel.MaxTunnelBuffered, config.Size(256 << 20)},
		{"tunnel.max_tunnels_per_peer", c.Tunnel.MaxTunnelsPerPeer, 8},
		{"clients", len(c.Clients), 1},
		{"client.name", c.Clients[0].Name, "hub"},
		{"client.servers[1]", c.Clients[0].Servers[1], config.Address("hub2.example.com:7443")},
		{"client.server_name", c.Clients[0].ServerName, "hub.example.com"},
		{"client.line", c.Clients[0].Line, 9},
		// [[client]] inherits every [tls] key it does not set, resolved.
		{"client.cert", c.Clients[0].Cert, filepath.Join(dir, "certs", "site-a.crt")},
		{"client.key", c.Clients[0].Key, filepath.Join(dir, "certs", "site-a.key")},
		{"client.ca", c.Clients[0].CA, filepath.Join(dir, "certs", "partners-ca.crt")},
		{"client.crl[0]", c.Clients[0].CRL[0], filepath.Join(dir, "certs", "partners-ca.crl")},
		{"client.min_version", c.Clients[0].MinVersion, "1.2"}, // overridden
		{"client.dial_timeout", c.Clients[0].DialTimeout.D(), 10 * time.Second},
		{"client.backoff_min", c.Clients[0].BackoffMin.D(), 200 * time.Millisecond},
		{"client.backoff_max", c.Clients[0].BackoffMax.D(), 30 * time.Second},
		{"forward.listen", c.Forwards[0].Listen, config.Address("127.0.0.1:15432")},
		{"forward.via", c.Forwards[0].Via, "hub"},
		{"forward.tunnel_wait", c.Forwards[0].TunnelWait.D(), 10 * time.Second},
		{"forward.line", c.Forwards[0].Line, 15},
		{"log.level", c.Log.Level, "debug"},
		{"log.format", c.Log.Format, "json"},
		{"path", c.Path, filepath.Join(dir, "postern.toml")},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestParseHub(t *testing.T) {
	c, dir, err := parse(t, hubConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Servers[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"shutdown_timeout", c.ShutdownTimeout.D(), time.Minute},
		{"tunnel.stream_window", c.Tunnel.StreamWindow, config.Size(4 << 20)},
		{"server.listen", s.Listen, config.Address("0.0.0.0:7443")},
		{"server.cert", s.Cert, filepath.Join(dir, "hub-alt.crt")}, // overridden, resolved
		{"server.key", s.Key, "/etc/postern/hub.key"},              // inherited, absolute kept
		{"server.ca", s.CA, filepath.Join(dir, "partners-ca.crt")},
		{"server.min_version", s.MinVersion, "1.3"},
		{"server.handshake_timeout", s.HandshakeTimeout.D(), 5 * time.Second},
		{"server.max_handshakes", s.MaxHandshakes, 128},
		{"server.max_handshakes_per_address", s.MaxHandshakesPerAddress, 8},
		{"server.hello_timeout", s.HelloTimeout.D(), 3 * time.Second},
		{"server.line", s.Line, 12},
		{"tls.cert", c.TLS.Cert, filepath.Join(dir, "hub.crt")}, // [tls] itself untouched by the override
		{"service.name", c.Services[0].Name, "erp-db"},
		{"service.target", c.Services[0].Target, config.Address("10.0.0.5:5432")},
		{"service.allow", len(c.Services[0].Allow), 4},
		{"service.dial_timeout", c.Services[0].DialTimeout.D(), 10 * time.Second},
		{"service.line", c.Services[0].Line, 17},
		{"admin.listen", c.Admin.Listen, config.Address("127.0.0.1:9901")},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "site.toml")
	if err := os.WriteFile(path, []byte(siteConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "certs", "site-a.key"); c.TLS.Key != want {
		t.Errorf("tls.key = %q, want %q", c.TLS.Key, want)
	}
	_, err = config.Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		value string
		want  config.Size
	}{
		{`"4MiB"`, 4 << 20},
		{`"512KiB"`, 512 << 10},
		{`"1GiB"`, 1 << 30},
		{`"16MB"`, 16_000_000},
		{`" 2 MiB "`, 2 << 20},
		{`"1048576"`, 1 << 20},
		{`"300000B"`, 300000},
		{`1048576`, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			c, _, err := parse(t, "[tunnel]\nstream_window = "+tt.value+"\n"+validClient)
			if err != nil {
				t.Fatal(err)
			}
			if c.Tunnel.StreamWindow != tt.want {
				t.Errorf("stream_window = %d, want %d", c.Tunnel.StreamWindow, tt.want)
			}
		})
	}
}

// validClient is the smallest valid config, lines 1-7.
const validClient = `[tls]
cert = "a.crt"
key = "a.key"
ca = "ca.crt"
[[client]]
name = "hub"
servers = ["hub.example.com:7443"]
`

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // FILE stands for the config's path
	}{
		// Strict decoding: unknown keys, with line and column.
		{"unknown top-level key", "nmae = \"x\"\n" + validClient,
			`config FILE:1:1: unknown key "nmae": did you mean "name"?`},
		{"unknown key in tls", "[tls]\ncert = \"a.crt\"\nkey = \"a.key\"\nca = \"ca.crt\"\n  crt = \"b.crt\"\n" + validClient[len("[tls]\ncert = \"a.crt\"\nkey = \"a.key\"\nca = \"ca.crt\"\n"):],
			`config FILE:5:3: unknown key "tls.crt": did you mean "cert"?`},
		{"unknown key in service", validClient + "[[service]]\nname = \"erp-db\"\ntarget = \"10.0.0.5:5432\"\n\tallow_all = true\n",
			`config FILE:11:2: unknown key "service.allow_all"`},
		{"unknown table", validClient + "[metrics]\nlisten = \"x\"\n",
			`config FILE:8:1: unknown key "metrics"`},

		// Types.
		{"wrong type", "name = 5\n" + validClient,
			`config FILE:1:8: name: must be a string, not an integer`},
		{"wrong type in an array of tables", validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\n[[service]]\nname = [\"b\"]\ntarget = \"h:2\"\n",
			`config FILE:12:8: service.name: must be a string, not an array`},
		{"table written as value", "tls = \"x\"\n[[client]]\nname = \"hub\"\nservers = [\"h:1\"]\n",
			`config FILE:1:7: tls: must be a table, not a string`},
		{"integer duration", "shutdown_timeout = 10\n" + validClient,
			`config FILE:1:20: shutdown_timeout: duration must be a string with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d" (got 10)`},
		{"duration without unit", "shutdown_timeout = \"10\"\n" + validClient,
			`config FILE:1:20: shutdown_timeout: invalid duration "10": use a number with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d"`},
		{"duration in words", validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\ndial_timeout = \"ten seconds\"\n",
			`config FILE:11:16: service.dial_timeout: invalid duration "ten seconds": use a number with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d"`},
		{"duration in weeks", "[tls]\nexpiry_warning = \"4w\"\n" + validClient[len("[tls]\n"):],
			`config FILE:2:18: tls.expiry_warning: invalid duration "4w": use a number with a unit: ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d"`},
		{"zero duration", "shutdown_timeout = \"0s\"\n" + validClient,
			`config FILE:1:20: shutdown_timeout: duration "0s" is zero: leave the key out for its default (see the config reference)`},
		{"negative procs", "name = \"a\"\nprocs = -2\n" + validClient,
			`config FILE:2: procs: -2 is negative (0: half the CPUs, at least 1)`},
		{"negative duration", "[tunnel]\nopen_timeout = \"-5s\"\n" + validClient,
			`config FILE:2:16: tunnel.open_timeout: invalid duration "-5s": must not be negative`},
		{"size bogus", "[tunnel]\nstream_window = \"bogus\"\n" + validClient,
			`config FILE:2:17: tunnel.stream_window: invalid size "bogus": use bytes or a unit, like "4MiB"`},
		{"size float", "[tunnel]\nstream_window = 1.5\n" + validClient,
			`config FILE:2:17: tunnel.stream_window: size must be an integer number of bytes or a string like "4MiB" (got 1.5)`},
		{"size too small", "[tunnel]\nstream_window = \"64KiB\"\n" + validClient,
			`config FILE: tunnel.stream_window: 65536 bytes is outside 256KiB..1GiB`},
		{"buffer budget too small", "[tunnel]\nmax_buffered = \"64KiB\"\n" + validClient,
			`config FILE: tunnel.max_buffered: 65536 bytes is below 256KiB, one stream's initial window`},
		{"syntax", "name = \n" + validClient,
			`config FILE:1:8: name: expected value but found '\n' instead`},

		// Addresses.
		{"address without port", validClient + "[[service]]\nname = \"erp-db\"\ntarget = \"db.internal\"\n",
			`config FILE:10:10: service.target: "db.internal": missing port in address`},
		{"port out of range", validClient + "[[service]]\nname = \"erp-db\"\ntarget = \"db.internal:99999\"\n",
			`config FILE:10:10: service.target: "db.internal:99999": port "99999" is not a number from 1 to 65535`},
		{"port not a number", validClient + "[[forward]]\nlisten = \"127.0.0.1:pg\"\nservice = \"x\"\nvia = \"hub\"\n",
			`config FILE:9:10: forward.listen: "127.0.0.1:pg": port "pg" is not a number from 1 to 65535`},
		{"address not a string", "[admin]\nlisten = 9901\n" + validClient,
			`config FILE:2:10: admin.listen: address must be a string "host:port" (got 9901)`},
		// The decoder reports a bad value in an array of tables at the key's
		// last occurrence; the message must point at the one that is wrong.
		{"bad address in first of two services", validClient + "[[service]]\nname = \"a\"\ntarget = \"db\"\n[[service]]\nname = \"b\"\ntarget = \"db:1\"\n",
			`config FILE:10:10: service.target: "db": missing port in address`},

		// Required keys.
		{"nothing to do", "name = \"idle\"\n",
			`config FILE: nothing to do: add a [[server]] to accept tunnels or a [[client]] to dial one`},
		{"server without listen", validClient + "[[server]]\nmax_handshakes = 4\n",
			`config FILE:8: [[server]]: listen is required, like listen = "0.0.0.0:7443"`},
		{"negative max_handshakes_per_address", validClient + "[[server]]\nlisten = \":7443\"\nmax_handshakes_per_address = -1\n",
			`config FILE:8: server :7443: max_handshakes_per_address must be positive`},
		{"server peer of an unknown kind", validClient + "[[server]]\nlisten = \":7443\"\npeer = [\"email:ops@example.com\"]\n",
			`config FILE:8: server :7443: peer "email:ops@example.com": unknown kind: start with one of dns: ip: uri: cn: ou: sha256: spki:, or write "*" for any verified peer`},
		{"server without ca", "[tls]\ncert = \"a.crt\"\nkey = \"a.key\"\n[[server]]\nlisten = \":7443\"\n",
			`config FILE:4: server :7443: no ca: Postern always verifies the peer, so it needs the CA bundle that signs peer certificates`},
		{"server without cert", "[[server]]\nlisten = \":7443\"\nca = \"ca.crt\"\n",
			`config FILE:1: server :7443: no certificate: set cert in [tls] or in this table`},
		{"client without key", "[[client]]\nname = \"hub\"\nservers = [\"h:1\"]\ncert = \"a.crt\"\nca = \"ca.crt\"\n",
			`config FILE:1: client "hub": no private key: set key in [tls] or in this table`},
		{"client without name", validClient + "[[client]]\nservers = [\"h:1\"]\n",
			`config FILE:8: [[client]]: name is required; forwards refer to it with via = "NAME"`},
		{"client without servers", validClient + "[[client]]\nname = \"dr\"\n",
			`config FILE:8: client "dr": servers is required, like servers = ["hub.example.com:7443"]`},
		{"forward without listen", validClient + "[[forward]]\nservice = \"erp\"\nvia = \"hub\"\n",
			`config FILE:8: [[forward]]: listen is required, like listen = "127.0.0.1:15432"`},
		{"forward without service", validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nvia = \"hub\"\n",
			`config FILE:8: forward 127.0.0.1:1: service is required: the name of a [[service]] on the peer`},
		{"forward without via", validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"erp\"\n",
			`config FILE:8: forward 127.0.0.1:1: via is required: the name of the [[client]] whose tunnel carries it`},
		{"service without name", validClient + "[[service]]\ntarget = \"h:1\"\n",
			`config FILE:8: [[service]]: name is required`},
		{"service without target", validClient + "[[service]]\nname = \"erp\"\n",
			`config FILE:8: service "erp": target is required, like target = "10.0.0.5:5432" (or targets = ["10.0.0.5:5432", "10.0.0.6:5432"] for several)`},
		{"service with target and targets", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\ntargets = [\"h:2\"]\n",
			`config FILE:8: service "erp": set target or targets, not both: move "h:1" into targets`},
		{"service with a target listed twice", validClient + "[[service]]\nname = \"erp\"\ntargets = [\"h:1\", \"h:2\", \"h:1\"]\n",
			`config FILE:8: service "erp": targets: "h:1" is listed twice`},
		{"service with a bad address in targets", validClient + "[[service]]\nname = \"erp\"\ntargets = [\"h:1\", \"db\"]\n",
			`config FILE:10:11: service.targets: "db": missing port in address`},
		{"service with an unknown target_strategy", validClient + "[[service]]\nname = \"erp\"\ntargets = [\"h:1\", \"h:2\"]\ntarget_strategy = \"random\"\n",
			`config FILE:8: service "erp": target_strategy: "random" is not one of failover, round-robin`},

		{"service name the protocol cannot carry", validClient + "[[service]]\nname = \"erp db\"\ntarget = \"h:1\"\n",
			`config FILE:8: service "erp db": name: ' ' is not allowed: use only A-Z a-z 0-9 . _ -`},
		{"forward to a service name the protocol cannot carry", validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"erp/db\"\nvia = \"hub\"\n",
			`config FILE:8: forward 127.0.0.1:1: service "erp/db": '/' is not allowed: use only A-Z a-z 0-9 . _ -`},
		{"service name too long", validClient + "[[service]]\nname = \"" + strings.Repeat("s", 256) + "\"\ntarget = \"h:1\"\n",
			`config FILE:8: service "` + strings.Repeat("s", 256) + `": name: 256 characters; at most 255`},

		// Cross-references and duplicates.
		{"via names no client", validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"erp\"\nvia = \"hbu\"\n",
			`config FILE:8: forward 127.0.0.1:1: via "hbu": no [[client]] has that name (for a reverse forward, name the peer identity, like via = "dns:partner.example.com")`},
		{"duplicate client", validClient + "\n[[client]]\nname = \"hub\"\nservers = [\"h:2\"]\n",
			`config FILE:9: client "hub": name used by another [[client]]`},
		{"duplicate service", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\n[[service]]\nname = \"erp\"\ntarget = \"h:2\"\n",
			`config FILE:11: service "erp": name used by another [[service]]`},
		{"duplicate forward listen", validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"a\"\nvia = \"hub\"\n[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"b\"\nvia = \"hub\"\n",
			`config FILE:12: forward 127.0.0.1:1: listen address already used by the forward on line 8`},
		{"allow written as a distinguished name", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"CN=site-a\"]\n",
			`config FILE:8: service "erp": allow "CN=site-a": unknown kind: did you mean "cn:site-a"? (identities are written kind:value, kind one of dns: ip: uri: cn: ou: sha256: spki:)`},
		{"allow kind in capitals", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"DNS:site-a.example.com\"]\n",
			`config FILE:8: service "erp": allow "DNS:site-a.example.com": unknown kind: did you mean "dns:site-a.example.com"? (identities are written kind:value, kind one of dns: ip: uri: cn: ou: sha256: spki:)`},
		{"IPv6 address without brackets", validClient + "[[forward]]\nlisten = \"::1:7445\"\nservice = \"x\"\nvia = \"hub\"\n",
			`config FILE:9:10: forward.listen: "::1:7445": too many colons in address: did you mean "[::1]:7445"?`},
		{"misspelt key in a client", "[tls]\ncert = \"a.crt\"\nkey = \"a.key\"\nca = \"ca.crt\"\n[[client]]\nname = \"hub\"\nserver = [\"h:1\"]\n",
			`config FILE:7:1: unknown key "client.server": did you mean "servers"?`},
		{"misspelt tls key in a server", validClient + "[[server]]\nlisten = \":7443\"\nkye = \"b.key\"\n",
			`config FILE:10:1: unknown key "server.kye": did you mean "key"?`},
		{"allow unknown kind", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"dns:a.example.com\", \"email:ops@example.com\"]\n",
			`config FILE:8: service "erp": allow "email:ops@example.com": unknown kind: start with one of dns: ip: uri: cn: ou: sha256: spki:, or write "*" for any verified peer`},
		{"allow empty value", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"cn:\"]\n",
			`config FILE:8: service "erp": allow "cn:": nothing after "cn:"`},
		{"allow names a CA by name", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"dns:a.example.com from ca:cn:Partner A\"]\n",
			`config FILE:8: service "erp": allow "dns:a.example.com from ca:cn:Partner A": " from ca:cn:Partner A": name the CA by sha256:<fingerprint of its certificate> or spki:<hash of its key>`},
		{"allow from ca with unknown kind", validClient + "[[service]]\nname = \"erp\"\ntarget = \"h:1\"\nallow = [\"a.example.com from ca:sha256:00\"]\n",
			`config FILE:8: service "erp": allow "a.example.com from ca:sha256:00": unknown kind: start with one of dns: ip: uri: cn: ou: sha256: spki:, or write "*" for any verified peer`},

		// Enumerations.
		{"log level", "[log]\nlevel = \"verbose\"\n" + validClient,
			`config FILE: log.level: "verbose" is not one of debug, info, warn, error`},
		{"log format", "[log]\nformat = \"xml\"\n" + validClient,
			`config FILE: log.format: "xml" is not one of text, json`},
		{"min_version 1.1", "[tls]\nmin_version = \"1.1\"\ncert = \"a.crt\"\nkey = \"a.key\"\nca = \"ca.crt\"\n[[client]]\nname = \"hub\"\nservers = [\"h:1\"]\n",
			`config FILE: tls.min_version: "1.1" is not supported: use "1.3" (default) or "1.2"`},
		{"min_version 1.1 in a client", validClient + "min_version = \"1.1\"\n",
			`config FILE:5: client "hub": min_version: "1.1" is not supported: use "1.3" (default) or "1.2"`},
		{"backoff", validClient + "backoff_min = \"1m\"\nbackoff_max = \"10s\"\n",
			`config FILE:5: client "hub": backoff_min 1m0s is larger than backoff_max 10s`},
		{"strategy unknown", validClient + "strategy = \"random\"\n",
			`config FILE:5: client "hub": strategy: "random" is not one of ordered, round-robin, all`},
		{"hubs without all", validClient + "hubs = 3\n",
			`config FILE:8:1: client "hub": hubs is only for strategy = "all" (a tunnel to every hub of a pool)`},
		{"hubs out of range", validClient + "strategy = \"all\"\nhubs = 65\n",
			`config FILE:9:1: client "hub": hubs = 65: use 1 to 64, or leave it out for one hub per server`},
		{"tunnels with all", validClient + "strategy = \"all\"\ntunnels = 2\n",
			`config FILE:9:1: client "hub": tunnels = 2: strategy = "all" keeps one tunnel to each hub; set hubs to the number of hubs instead`},
		{"all without mux", validClient + "strategy = \"all\"\nmux = false\n",
			`config FILE:8:1: client "hub": strategy = "all" needs tunnels; mux = false dials one connection per forwarded connection`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "postern.toml")
			c, err := config.Parse(path, []byte(tt.text))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error\n%s", c, tt.want)
			}
			want := strings.ReplaceAll(tt.want, "FILE", path)
			if err.Error() != want {
				t.Errorf("error:\n got  %s\n want %s", err, want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != path {
				t.Errorf("error %T does not carry the file name as *config.Error", err)
			}
		})
	}
}

// TestServiceTargets: targets lists several addresses (host:port or a Unix
// socket, made absolute against the config's folder), the strategy
// defaults to failover, and a lone target is a list of one.
func TestServiceTargets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.toml")
	text := validClient + `[[service]]
name = "db"
targets = ["10.0.0.5:5432", "unix:db.sock"]
health_interval = "2s"
[[service]]
name = "one"
target = "10.0.0.7:80"
target_strategy = "round-robin"
`
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	db, one := c.Services[0], c.Services[1]
	want := []config.Address{"10.0.0.5:5432", config.Address("unix:" + filepath.Join(dir, "db.sock"))}
	if got := db.TargetList(); !slices.Equal(got, want) {
		t.Errorf("db targets: %q, want %q", got, want)
	}
	if db.TargetStrategy != "failover" || db.HealthInterval.D() != 2*time.Second {
		t.Errorf("db: strategy %q, health_interval %v", db.TargetStrategy, db.HealthInterval)
	}
	if got := one.TargetList(); !slices.Equal(got, []config.Address{"10.0.0.7:80"}) || one.TargetStrategy != "round-robin" || one.HealthInterval != 0 {
		t.Errorf("one: targets %q, strategy %q, health_interval %v", got, one.TargetStrategy, one.HealthInterval)
	}
}
