package config_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/wire"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// any error it returns must be a *config.Error naming the file.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		siteConfig,
		hubConfig,
		validClient,
		"",
		"name = 5\n",
		"shutdown_timeout = 10\n" + validClient,
		"[tunnel]\nstream_window = \"4MiB\"\n" + validClient,
		validClient + "[[service]]\nname = \"a\"\ntarget = \"db\"\n[[service]]\nname = \"b\"\ntarget = \"db:1\"\n",
		validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"a\"\nvia = \"dns:peer.example.com\"\n",
		"a.b.c = 1\n[x.y]\nz = [1, \"2\"]\n",
		"[[server]]\nlisten = \":0\"\nmux = false\n",
		"[tls]\ncrl = \"x\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"db:1\"\nallow = [\"* from ca:sha256:ab\", \"dns:a from ca:spki:cd\"]\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"db:1\"\nallow = [\"cn:x from ca:cn:y\", \"cn:x from y\"]\n",
		validClient + "[[forward]]\nlisten = \"127.0.0.1:1\"\nservice = \"a\"\nvia = \"* from ca:sha256:ab\"\n",
		validClient + "[[forward]]\nlisten = \"::1:7445\"\nservice = \"a\"\nvia = \"hub\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\nallow = [\"CN=site-a\"]\n",
		"[[client]]\nname = \"hub\"\nserver = [\"h:1\"]\n",
		validClient + "[[service]]\nname = \"a\"\ntargets = [\"h:1\", \"unix:b.sock\"]\ntarget_strategy = \"round-robin\"\nhealth_interval = \"5s\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\ntargets = [\"h:1\", \"h\"]\ntarget_strategy = \"random\"\n",
		"[tls]\nexpiry_warning = \"30d\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\nallow = [\"dns:a..b\"]\n",
		validClient + "proxy = \"http://u:pw@p:3128\"\n",
		validClient + "proxy = \"socks5://u@p:1080\"\nproxy_password_env = \"P\"\n",
		validClient + "[[forward]]\nlisten = \"unix:a.sock\"\nmode = \"0600\"\nservice = \"a\"\nvia = \"hub\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"unix:/run/a.sock\"\n[[server]]\nlisten = \"[::1]:7443\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("/fuzz/postern.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config /fuzz/postern.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(c.Servers) == 0 && len(c.Clients) == 0 {
			t.Fatal("accepted a config with nothing to do")
		}
		var entries []string
		for _, sv := range c.Services {
			entries = append(entries, sv.Allow...)
			if err := wire.CheckServiceName(sv.Name); err != nil || sv.Name == "" {
				t.Fatalf("accepted service name %q, which no open request can carry", sv.Name)
			}
		}
		clients := map[string]bool{}
		for _, cl := range c.Clients {
			entries = append(entries, cl.Peer...)
			clients[cl.Name] = true
		}
		for _, fw := range c.Forwards {
			if !clients[fw.Via] {
				entries = append(entries, fw.Via) // a reverse forward's peer
			}
		}
		for _, e := range entries {
			checkAcceptedIdentity(t, e)
			// What loads, the agent runs: identity parsing agrees.
			if _, err := identity.Parse(e); err != nil {
				t.Fatalf("accepted %q, which identity.Parse refuses: %v", e, err)
			}
		}
		// Defaults are filled in: nothing the agent divides by or waits on
		// is zero.
		if c.Tunnel.KeepaliveInterval <= 0 || c.Tunnel.KeepaliveTimeout <= 0 || c.Tunnel.OpenTimeout <= 0 || c.Tunnel.MaxStreams <= 0 {
			t.Fatalf("accepted with an unset tunnel default: %+v", c.Tunnel)
		}
		checkAcceptedAddresses(t, c)
		// A password is never accepted inline in a proxy URL.
		for _, cl := range c.Clients {
			if cl.Proxy == "" || cl.Proxy == "env" {
				continue
			}
			u, err := config.ParseProxyURL(cl.Proxy)
			if err != nil {
				t.Fatalf("accepted proxy %q that does not parse: %v", cl.Proxy, err)
			}
			if _, set := u.User.Password(); set {
				t.Fatalf("accepted proxy %q with an inline password", cl.Proxy)
			}
		}
	})
}

// checkAcceptedIdentity checks an allow or peer entry the config accepted:
// it starts with a kind or is "*", and whatever follows " from ca:" names
// the CA by a hash.
func checkAcceptedIdentity(t *testing.T, e string) {
	t.Helper()
	name, ref, scoped := strings.Cut(e, " from ca:")
	if scoped && !strings.HasPrefix(ref, "sha256:") && !strings.HasPrefix(ref, "spki:") {
		t.Fatalf("accepted %q, whose CA is not named by sha256: or spki:", e)
	}
	if name == "*" {
		return
	}
	kind, value, ok := strings.Cut(name, ":")
	if !ok || value == "" || !strings.Contains(" dns ip uri cn ou sha256 spki ", " "+kind+" ") {
		t.Fatalf("accepted %q, which has no known kind", e)
	}
}

// checkAcceptedAddresses checks the addresses a config accepted: a Unix
// socket only where the agent can use one (a forward's listen, a
// service's target), as an absolute path a socket can bind; every other
// address a host:port the net package takes.
func checkAcceptedAddresses(t *testing.T, c *config.Config) {
	t.Helper()
	hostPort := func(a config.Address) {
		if _, _, err := net.SplitHostPort(string(a)); err != nil {
			t.Fatalf("accepted %q, which is not host:port: %v", a, err)
		}
	}
	either := func(a config.Address) {
		p, ok := a.Unix()
		if !ok {
			hostPort(a)
			return
		}
		if !filepath.IsAbs(p) || len(p) > config.MaxUnixPath || strings.ContainsRune(p, 0) {
			t.Fatalf("accepted socket path %q: not absolute, too long or with a NUL", p)
		}
	}
	for _, s := range c.Servers {
		hostPort(s.Listen)
	}
	for _, cl := range c.Clients {
		for _, a := range cl.Servers {
			hostPort(a)
		}
	}
	if c.Admin.Listen != "" {
		hostPort(c.Admin.Listen)
	}
	for _, f := range c.Forwards {
		either(f.Listen)
		if m := f.UnixMode(); m > 0o777 || m&0o600 != 0o600 {
			t.Fatalf("accepted forward %s with mode %o", f.Listen, m)
		}
	}
	for _, sv := range c.Services {
		// One target or several, never both, never none, each usable.
		targets := sv.TargetList()
		if len(targets) == 0 || (sv.Target != "" && len(sv.Targets) > 0) {
			t.Fatalf("accepted service %q with target %q and targets %q", sv.Name, sv.Target, sv.Targets)
		}
		for _, a := range targets {
			either(a)
		}
		if sv.TargetStrategy != "failover" && sv.TargetStrategy != "round-robin" {
			t.Fatalf("accepted service %q with target_strategy %q", sv.Name, sv.TargetStrategy)
		}
	}
}
