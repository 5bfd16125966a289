package config_test

import (
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
)

const caHub = `
[tls]
cert = "hub.crt"
key  = "hub.key"
ca   = "pki/ca.crt"
[ca]
%s
[[server]]
listen = "0.0.0.0:7443"
`

func TestCADefaultsAndPaths(t *testing.T) {
	c, err := config.Parse("/etc/postern/hub.toml", []byte(strings.Replace(caHub, "%s", `identities = ["dns:*.sites.example.com", "uri:spiffe://example.com/site/*"]
key_types = ["ecdsa-p256", "ED25519"]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	a := c.CA
	if a.Dir != "/etc/postern/pki" || a.Validity.D() != config.DefaultCAValidity || a.Renew == nil || !*a.Renew {
		t.Fatalf("[ca] = %+v", a)
	}
	e, err := config.Parse("/etc/postern/site.toml", []byte("[tls]\ncert = \"site.crt\"\nkey = \"site.key\"\nca = \"ca.crt\"\n[enroll]\ntoken_file = \"invite.token\"\n[[client]]\nname = \"hub\"\nservers = [\"hub.example.com:7443\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Enroll.TokenFile != "/etc/postern/invite.token" {
		t.Fatalf("token_file = %q", e.Enroll.TokenFile)
	}
}

func TestCAValidate(t *testing.T) {
	for _, tc := range []struct{ ca, want string }{
		{`identities = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]`,
			`hub.toml:7: ca.identities: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": use dns:, ip:, uri:, cn: or ou: patterns`},
		{`identities = ["*"]`, `ca.identities: "*": use dns:, ip:, uri:, cn: or ou: patterns`},
		{`identities = ["dns:a.example.com from ca:sha256:00"]`, `ca.identities: "dns:a.example.com from ca:sha256:00": use dns:, ip:`},
		{`identities = ["dns:bad name"]`, `ca.identities: "dns:bad name": `},
		{`identities = ["ip:10.0.0.0/33"]`, `ca.identities: "ip:10.0.0.0/33": `},
		{`key_types = ["dsa"]`, `hub.toml:7: ca.key_types: "dsa" is not a key type: use some of ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096`},
		{`validity = "5s"`, `hub.toml:7: ca.validity: 5s: use at least 10s`},
		{`validity = "-1h"`, `invalid duration "-1h"`},
		{`identites = []`, `unknown key "ca.identites": did you mean "identities"?`},
	} {
		_, err := config.Parse("/etc/postern/hub.toml", []byte(strings.Replace(caHub, "%s", tc.ca, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot  %v\nwant it to contain %q", tc.ca, err, tc.want)
		}
	}
	_, err := config.Parse("/etc/postern/site.toml", []byte("[tls]\ncert = \"site.crt\"\nkey = \"site.key\"\nca = \"ca.crt\"\n[enroll]\n[[client]]\nname = \"hub\"\nservers = [\"hub.example.com:7443\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "enroll.token_file: required in [enroll]") {
		t.Errorf("empty [enroll]: %v", err)
	}
}
