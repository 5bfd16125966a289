package config_test

import (
	"path/filepath"
	"strings"
	"testing"
)

const tokenKey = "pkcs11:token=postern;object=site-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/postern/token.pin"

// TestPKCS11Key checks that a pkcs11: key or cert is kept as written (not
// resolved against the config folder) in [tls], [[server]] and [[client]].
func TestPKCS11Key(t *testing.T) {
	text := "[tls]\ncert = \"a.crt\"\nkey = \"" + tokenKey + "\"\nca = \"ca.crt\"\n" +
		"[[server]]\nlisten = \"127.0.0.1:7443\"\ncert = \"pkcs11:token=postern;object=hub?module-path=/m.so\"\nkey = \"pkcs11:token=postern;object=hub?module-path=/m.so&pin-source=file:/p\"\n" +
		"[[client]]\nname = \"hub\"\nservers = [\"hub.example.com:7443\"]\n"
	c, dir, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Clients[0].Key; got != tokenKey {
		t.Errorf("client key = %q, want the URI unchanged", got)
	}
	if got, want := c.Clients[0].Cert, filepath.Join(dir, "a.crt"); got != want {
		t.Errorf("client cert = %q, want %q", got, want)
	}
	if got := c.Servers[0].Cert; got != "pkcs11:token=postern;object=hub?module-path=/m.so" {
		t.Errorf("server cert = %q, want the URI unchanged", got)
	}
}

func TestPKCS11KeyErrors(t *testing.T) {
	for _, tc := range []struct{ name, key, want string }{
		{"syntax", "pkcs11:token=postern;objekt=a?module-path=/m.so&pin-source=file:/p",
			`config FILE:3: client "hub": key: pkcs11:token=postern;objekt=a?module-path=/m.so&pin-source=file:/p: PKCS#11 URI: unknown path attribute "objekt"`},
		{"pin-value", "pkcs11:token=postern;object=a?module-path=/m.so&pin-value=1234",
			`config FILE:3: client "hub": key: pkcs11:token=postern;object=a: pin-value puts the token PIN in the config: write the PIN to a file only postern can read and use pin-source=file:/etc/postern/token.pin instead`},
		{"no pin-source", "pkcs11:token=postern;object=a?module-path=/m.so",
			`config FILE:3: client "hub": key: pkcs11:token=postern;object=a: no pin-source: add &pin-source=file:/etc/postern/token.pin`},
		{"relative module", "pkcs11:token=postern;object=a?module-path=libsofthsm2.so&pin-source=file:/p",
			`config FILE:3: client "hub": key: pkcs11:token=postern;object=a?module-path=libsofthsm2.so&pin-source=file:/p: PKCS#11 URI: module-path "libsofthsm2.so" is not an absolute path`},
	} {
		text := strings.Replace(validClient, `key = "a.key"`, `key = "`+tc.key+`"`, 1)
		_, dir, err := parse(t, text)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		got := strings.ReplaceAll(err.Error(), filepath.Join(dir, "postern.toml"), "FILE")
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if strings.Contains(got, "1234") {
			t.Errorf("%s: error shows the PIN: %s", tc.name, got)
		}
	}
}
