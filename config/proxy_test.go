package config_test

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestProxy(t *testing.T) {
	c, dir, err := parse(t, validClient+"proxy = \"http://svc-postern@proxy.corp:3128\"\nproxy_password_file = \"secrets/proxy.pass\"\n")
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Clients[0]
	if cl.Proxy != "http://svc-postern@proxy.corp:3128" {
		t.Errorf("proxy = %q", cl.Proxy)
	}
	if want := filepath.Join(dir, "secrets", "proxy.pass"); cl.ProxyPasswordFile != want {
		t.Errorf("proxy_password_file = %q, want %q (relative to the config)", cl.ProxyPasswordFile, want)
	}
	if cl.ProxyAuth != "basic" {
		t.Errorf("proxy_auth = %q, want the default basic", cl.ProxyAuth)
	}
	for _, ok := range []string{
		`proxy = "env"`,
		"proxy = \"env\"\nproxy_password_env = \"PROXY_PASS\"",
		`proxy = "socks5://10.1.1.1:1080"`,
		"proxy = \"socks5://gw@[::1]:1080\"\nproxy_password_env = \"GW_PASS\"",
		"proxy = \"http://CORP%5Csvc@proxy:8080/\"\nproxy_password_file = \"/run/secrets/p\"\nproxy_auth = \"ntlm\"",
	} {
		if _, _, err := parse(t, validClient+ok+"\n"); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	// No proxy: no default either.
	c, _, err = parse(t, validClient)
	if err != nil || c.Clients[0].ProxyAuth != "" {
		t.Errorf("without proxy: proxy_auth = %q, err %v; want empty", c.Clients[0].ProxyAuth, err)
	}
}

func TestProxyErrors(t *testing.T) {
	tests := []struct {
		name string
		text string // after validClient, from line 8
		want string
	}{
		{"inline password", `proxy = "http://bob:hunter2@proxy.corp:3128"`,
			`config FILE:8:1: client "hub": proxy: "http://bob:xxxxx@proxy.corp:3128" has the password inline: remove it from the URL and put it in a file named by proxy_password_file (or an environment variable named by proxy_password_env)`},
		{"inline password in socks5", `  proxy = "socks5://bob:hunter2@gw:1080"`,
			`config FILE:8:3: client "hub": proxy: "socks5://bob:xxxxx@gw:1080" has the password inline: remove it from the URL and put it in a file named by proxy_password_file (or an environment variable named by proxy_password_env)`},
		{"inline password in a URL that does not parse", `proxy = "http://bob:hunter2@proxy corp:3128"`,
			`config FILE:8:1: client "hub": proxy: "http://bob:xxxxx@proxy corp:3128": invalid character " " in host name`},
		{"no scheme", `proxy = "proxy.corp:3128"`,
			`config FILE:8:1: client "hub": proxy: "proxy.corp:3128": start with http:// or socks5:// (or write proxy = "env" to use HTTPS_PROXY and NO_PROXY)`},
		{"unknown scheme", `proxy = "https://proxy.corp:3128"`,
			`config FILE:8:1: client "hub": proxy: "https://proxy.corp:3128": scheme "https" is not one of http, socks5 (or write proxy = "env")`},
		{"no port", `proxy = "http://proxy.corp"`,
			`config FILE:8:1: client "hub": proxy: "http://proxy.corp": no port, like http://proxy.corp:3128`},
		{"no socks port", `proxy = "socks5://gw"`,
			`config FILE:8:1: client "hub": proxy: "socks5://gw": no port, like socks5://gw:1080`},
		{"bad port", `proxy = "http://proxy.corp:99999"`,
			`config FILE:8:1: client "hub": proxy: "proxy.corp:99999": port "99999" is not a number from 1 to 65535`},
		{"path", `proxy = "http://proxy.corp:3128/pac"`,
			`config FILE:8:1: client "hub": proxy: "http://proxy.corp:3128/pac": write only http://[USER@]HOST:PORT, without a path or query`},
		{"user without password", `proxy = "http://bob@proxy.corp:3128"`,
			`config FILE:8:1: client "hub": proxy: names user "bob" but no password: set proxy_password_file = "PATH" or proxy_password_env = "VARIABLE"`},
		{"password without user", "proxy = \"http://proxy.corp:3128\"\nproxy_password_file = \"p.txt\"",
			`config FILE:9:1: client "hub": proxy_password_file: set, but proxy names no user: write it as "http://USER@proxy.corp:3128"`},
		{"both password sources", "proxy = \"http://bob@proxy.corp:3128\"\nproxy_password_file = \"p.txt\"\nproxy_password_env = \"P\"",
			`config FILE:10:1: client "hub": proxy_password_env: set proxy_password_file or proxy_password_env, not both`},
		{"password without proxy", `proxy_password_env = "P"`,
			`config FILE:8:1: client "hub": proxy_password_env: set, but proxy is not: add proxy = "http://USER@HOST:PORT" (or remove proxy_password_env)`},
		{"unknown auth", "proxy = \"http://proxy.corp:3128\"\nproxy_auth = \"digest\"",
			`config FILE:9:1: client "hub": proxy_auth: "digest" is not one of basic, ntlm`},
		{"ntlm with socks5", "proxy = \"socks5://gw:1080\"\nproxy_auth = \"ntlm\"",
			`config FILE:9:1: client "hub": proxy_auth: "ntlm" is for http:// proxies; a socks5 proxy takes a user name and password`},
		{"ntlm without user", "proxy = \"http://proxy.corp:3128\"\nproxy_auth = \"ntlm\"",
			`config FILE:9:1: client "hub": proxy_auth: "ntlm" needs a user: write proxy as "http://USER@proxy.corp:3128" and set proxy_password_file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir, err := parse(t, validClient+tt.text+"\n")
			if err == nil {
				t.Fatalf("Parse succeeded, want error\n%s", tt.want)
			}
			want := strings.ReplaceAll(tt.want, "FILE", filepath.Join(dir, "postern.toml"))
			if err.Error() != want {
				t.Errorf("error:\n got  %s\n want %s", err, want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the message shows the password: %s", err)
			}
		})
	}
}

// A second [[client]] gets messages at its own keys, not the first one's.
func TestProxyErrorInSecondClient(t *testing.T) {
	text := validClient + "proxy = \"http://proxy.corp:3128\"\n[[client]]\nname = \"dr\"\nservers = [\"dr:7443\"]\nproxy = \"http://proxy.corp\"\n"
	_, dir, err := parse(t, text)
	want := "config " + filepath.Join(dir, "postern.toml") + `:12:1: client "dr": proxy: "http://proxy.corp": no port, like http://proxy.corp:3128`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got  %v\n want %s", err, want)
	}
}
