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
		validClient + "[[forward]]\nlisten = \"::1:7445\"\nservice = \"a\"\nvia = \"hub\"\n",
		validClient + "[[service]]\nname = \"a\"\ntarget = \"h:1\"\nallow = [\"CN=site-a\"]\n",
		"[[client]]\nname = \"hub\"\nserver = [\"h:1\"]\n",
		"[tls]\nexpiry_warning = \"30d\"\n",
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
	})
}
