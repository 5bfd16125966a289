package config_test

import (
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
)

const acmeHub = `
[tls]
cert = "acme/cert.pem"
key  = "acme/key.pem"
ca   = "partners-ca.crt"
[acme]
directory = "https://acme.example/dir"
domains = ["hub.example.com"]
http_listen = "0.0.0.0:80"
%s
[[server]]
listen = "0.0.0.0:7443"
`

func TestACME(t *testing.T) {
	c, err := config.Parse("/etc/postern/hub.toml", []byte(strings.Replace(acmeHub, "%s", `renew_before = "720h"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	a := c.ACME
	if a.Dir != "/etc/postern/acme" || a.CertPath() != "/etc/postern/acme/cert.pem" || a.KeyPath() != "/etc/postern/acme/key.pem" ||
		a.AccountKeyPath() != "/etc/postern/acme/account.key" || a.RenewBefore.D().Hours() != 720 {
		t.Fatalf("acme = %+v", a)
	}
	if c2, err := config.Parse("/etc/postern/hub.toml", []byte(hubConfig)); err != nil || c2.ACME != nil {
		t.Fatalf("no [acme]: %v, %+v", err, c2.ACME)
	}

	for _, tc := range []struct{ toml, want string }{
		{strings.Replace(acmeHub, `directory = "https://acme.example/dir"`, "", 1), "acme.directory: required"},
		{strings.Replace(acmeHub, `https://acme.example/dir`, "http://acme.example/dir", 1), `acme.directory: "http://acme.example/dir" is not an https:// URL`},
		{strings.Replace(acmeHub, `domains = ["hub.example.com"]`, "", 1), "acme.domains: required"},
		{strings.Replace(acmeHub, `"hub.example.com"`, `"https://hub"`, 1), `acme.domains: "https://hub" is not a DNS name`},
		{strings.Replace(acmeHub, `http_listen = "0.0.0.0:80"`, "", 1), "acme.http_listen: required"},
		{strings.Replace(acmeHub, `cert = "acme/cert.pem"`, `cert = "hub.crt"`, 1),
			`acme: no [[server]] uses the certificate it obtains: set cert = "/etc/postern/acme/cert.pem" and key = "/etc/postern/acme/key.pem"`},
		{strings.Replace(acmeHub, "%s", `renew_before = "-1h"`, 1), `acme.renew_before: invalid duration "-1h": must not be negative`},
		{strings.Replace(acmeHub, "%s", `renew_befor = "1h"`, 1), `unknown key "acme.renew_befor": did you mean "renew_before"?`},
	} {
		_, err := config.Parse("/etc/postern/hub.toml", []byte(strings.Replace(tc.toml, "%s", "", 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v\nwant it to contain %q", err, tc.want)
		}
	}
}
