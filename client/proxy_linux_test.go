package client

import (
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testproxy"
)

// These tests run Debian's squid and dante-server (see
// internal/testproxy). The targets are loopback echo servers: squid and
// danted connect to them as any proxy would connect to a Postern server.

func TestSquidNoAuth(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{})
	p := newProxy(t, config.Client{Proxy: "http://" + squid.Addr}, nil)
	if err := roundTrip(t, p.Dial(direct), echoServer(t)); err != nil {
		t.Fatalf("%v\n%s", err, squid.Log())
	}
}

func TestSquidBasicAuth(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{Users: map[string]string{"svc-postern": "correct horse"}})
	echo := echoServer(t)
	good := writePassword(t, "correct horse\n")
	p := newProxy(t, config.Client{Proxy: "http://svc-postern@" + squid.Addr, ProxyPasswordFile: good}, nil)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatalf("right password: %v\n%s", err, squid.Log())
	}

	bad := writePassword(t, "battery staple\n")
	p = newProxy(t, config.Client{Proxy: "http://svc-postern@" + squid.Addr, ProxyPasswordFile: bad}, nil)
	err := roundTrip(t, p.Dial(direct), echo)
	want := `proxy ` + squid.Addr + ` answered 407 Proxy Authentication Required: check the user "svc-postern" and proxy_password_file ` + bad
	if err == nil || err.Error() != want {
		t.Errorf("wrong password:\n got  %v\n want %s", err, want)
	}

	p = newProxy(t, config.Client{Proxy: "http://" + squid.Addr}, nil)
	err = roundTrip(t, p.Dial(direct), echo)
	want = `proxy ` + squid.Addr + ` answered 407 Proxy Authentication Required: the proxy wants a user name and password: write proxy = "http://USER@` + squid.Addr + `" and set proxy_password_file`
	if err == nil || err.Error() != want {
		t.Errorf("no credentials:\n got  %v\n want %s", err, want)
	}
}

func TestSquidDeniesPort(t *testing.T) {
	echo := echoServer(t)
	port := testproxy.Port(t, echo)
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{DenyPorts: []int{port}})
	p := newProxy(t, config.Client{Proxy: "http://" + squid.Addr}, nil)
	err := roundTrip(t, p.Dial(direct), echo)
	want := `proxy ` + squid.Addr + ` answered 403 Forbidden to CONNECT ` + echo + `: the proxy does not allow this destination; ask its administrators to allow CONNECT to port ` + strings.Split(echo, ":")[1]
	if err == nil || err.Error() != want {
		t.Errorf("denied port:\n got  %v\n want %s", err, want)
	}
}

func TestSquidDown(t *testing.T) {
	squid := testproxy.StartSquid(t, testproxy.SquidOptions{})
	echo := echoServer(t)
	p := newProxy(t, config.Client{Proxy: "http://" + squid.Addr}, nil)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatalf("%v\n%s", err, squid.Log())
	}
	squid.Stop()
	err := roundTrip(t, p.Dial(direct), echo)
	want := "proxy " + squid.Addr + " unreachable: connection refused"
	if err == nil || err.Error() != want {
		t.Errorf("proxy down:\n got  %v\n want %s", err, want)
	}
}

func TestDanteNoAuth(t *testing.T) {
	dante := testproxy.StartDante(t, false)
	p := newProxy(t, config.Client{Proxy: "socks5://" + dante.Addr}, nil)
	if err := roundTrip(t, p.Dial(direct), echoServer(t)); err != nil {
		t.Fatalf("%v\n%s", err, dante.Log())
	}
}

func TestDanteUsernameAuth(t *testing.T) {
	const user = "postern-socks-test"
	testproxy.SystemUser(t, user, "tunnel-Pass-1")
	dante := testproxy.StartDante(t, true)
	echo := echoServer(t)
	good := writePassword(t, "tunnel-Pass-1\n")
	p := newProxy(t, config.Client{Proxy: "socks5://" + user + "@" + dante.Addr, ProxyPasswordFile: good}, nil)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatalf("right password: %v\n%s", err, dante.Log())
	}
	bad := writePassword(t, "wrong\n")
	p = newProxy(t, config.Client{Proxy: "socks5://" + user + "@" + dante.Addr, ProxyPasswordFile: bad}, nil)
	err := roundTrip(t, p.Dial(direct), echo)
	want := "proxy " + dante.Addr + ` refused the user name and password: check the user "` + user + `" and proxy_password_file ` + bad
	if err == nil || err.Error() != want {
		t.Errorf("wrong password:\n got  %v\n want %s", err, want)
	}
	p = newProxy(t, config.Client{Proxy: "socks5://" + dante.Addr}, nil)
	err = roundTrip(t, p.Dial(direct), echo)
	want = "proxy " + dante.Addr + ` wants a user name and password: write proxy = "socks5://USER@` + dante.Addr + `" and set proxy_password_file`
	if err == nil || err.Error() != want {
		t.Errorf("no credentials:\n got  %v\n want %s", err, want)
	}
}

func TestDanteRefusesDestination(t *testing.T) {
	dante := testproxy.StartDante(t, false)
	p := newProxy(t, config.Client{Proxy: "socks5://" + dante.Addr}, nil)
	// danted only passes 127.0.0.0/8.
	err := roundTrip(t, p.Dial(direct), "192.0.2.1:7443")
	want := "proxy " + dante.Addr + ` answered "connection not allowed by ruleset" to the SOCKS5 request for 192.0.2.1:7443`
	if err == nil || err.Error() != want {
		t.Errorf("refused destination:\n got  %v\n want %s", err, want)
	}
}
