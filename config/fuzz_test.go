package config_test

import (
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
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
		validClient + "proxy = \"http://u:pw@p:3128\"\n",
		validClient + "proxy = \"socks5://u@p:1080\"\nproxy_password_env = \"P\"\n",
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
