//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/bench/report"
)

// routes are the plaintext addresses of the benchmark targets: the HTTP
// target, the iperf3 server and PostgreSQL (empty when the run has no
// pgbench scenario). A tunnel takes targets and gives back its own front
// addresses for the same ones.
type routes struct {
	http, bulk, pg string
}

// route is one target by name: the name is the Postern service and the
// stunnel/HAProxy section.
type route struct{ name, addr string }

// list is the routes in use, in a fixed order.
func (r routes) list() []route {
	var out []route
	for _, x := range []route{{"http", r.http}, {"bulk", r.bulk}, {"pg", r.pg}} {
		if x.addr != "" {
			out = append(out, x)
		}
	}
	return out
}

// frontsFor takes a free loopback address for each route of targets.
func frontsFor(targets routes) (routes, error) {
	var fronts routes
	for _, x := range targets.list() {
		a, err := freeAddr()
		if err != nil {
			return routes{}, err
		}
		switch x.name {
		case "http":
			fronts.http = a
		case "bulk":
			fronts.bulk = a
		case "pg":
			fronts.pg = a
		}
	}
	return fronts, nil
}

// get is the address of the route called name.
func (r routes) get(name string) string {
	for _, x := range r.list() {
		if x.name == name {
			return x.addr
		}
	}
	return ""
}

// certs are the ECDSA P-256 files every tunnel uses.
type certs struct {
	ca                   string
	serverCert, serverKy string
	clientCert, clientKy string
	serverPEM, clientPEM string // certificate and key in one file, for HAProxy
}

// serverName is the DNS name in the server certificate; every client end
// verifies it.
const serverName = "bench-server"

// tunnel is one running tunnel: its two ends (none for direct) and the
// front addresses the load connects to.
type tunnel struct {
	name   string
	ends   []*proc // client end, server end
	fronts routes
}

func (t *tunnel) pids() []int {
	var out []int
	for _, p := range t.ends {
		out = append(out, p.pid())
	}
	return out
}

func (t *tunnel) stop() {
	for _, p := range t.ends {
		p.stop()
	}
}

// alive reports an end that exited, with the end of its log.
func (t *tunnel) alive() error {
	for _, p := range t.ends {
		if p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.tail())
		}
	}
	return nil
}

// tunnelEnv is what starting a tunnel needs.
type tunnelEnv struct {
	dir     string // work folder for configs and logs
	bin     string // the postern binary
	certs   certs
	targets routes
	window  string // Postern stream_window
	maxconn int    // HAProxy maxconn that fits the open-file limit
}

func startTunnel(name string, env tunnelEnv) (*tunnel, error) {
	switch name {
	case report.Direct:
		return &tunnel{name: name, fronts: env.targets}, nil
	case report.Postern:
		return startPostern(env)
	case report.Stunnel:
		return startStunnel(env)
	case report.HAProxy:
		return startHAProxy(env)
	}
	return nil, fmt.Errorf("unknown tunnel %q", name)
}

func writeFile(dir, name, content string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(content), 0o600)
}

// startEnds starts the server end, then the client end, and returns the
// tunnel once the client end's fronts listen.
func startEnds(name string, fronts routes, serverListen string, server, client []string, dir string) (*tunnel, error) {
	t := &tunnel{name: name, fronts: fronts}
	srv, err := startProc(dir, name+"-server", server...)
	if err != nil {
		return nil, err
	}
	t.ends = append(t.ends, srv)
	if err := waitListening(context.Background(), serverListen, 10*time.Second, srv); err != nil {
		t.stop()
		return nil, err
	}
	cli, err := startProc(dir, name+"-client", client...)
	if err != nil {
		t.stop()
		return nil, err
	}
	t.ends = append([]*proc{cli}, t.ends...)
	for _, a := range fronts.list() {
		if err := waitListening(context.Background(), a.addr, 10*time.Second, cli); err != nil {
			t.stop()
			return nil, err
		}
	}
	return t, nil
}

const posternServerHead = `name = "bench-server"
shutdown_timeout = "1s"

[tls]
cert = %q
key = %q
ca = %q

[tunnel]
stream_window = %q

[log]
level = "warn"

[[server]]
listen = %q
`

const posternService = `
[[service]]
name = %q
target = %q
allow = ["cn:bench-client"]
`

const posternClientHead = `name = "bench-client"
shutdown_timeout = "1s"

[tls]
cert = %q
key = %q
ca = %q

[tunnel]
stream_window = %q

[log]
level = "warn"

[[client]]
name = "server"
servers = [%q]
server_name = %q
`

const posternForward = `
[[forward]]
listen = %q
service = %q
via = "server"
`

// posternServerConf is the hub end: one service per target.
func posternServerConf(c certs, window, listen string, targets routes) string {
	var b strings.Builder
	fmt.Fprintf(&b, posternServerHead, c.serverCert, c.serverKy, c.ca, window, listen)
	for _, x := range targets.list() {
		fmt.Fprintf(&b, posternService, x.name, x.addr)
	}
	return b.String()
}

// posternClientConf is the site end: one forward per front.
func posternClientConf(c certs, window, server string, fronts routes) string {
	var b strings.Builder
	fmt.Fprintf(&b, posternClientHead, c.clientCert, c.clientKy, c.ca, window, server, serverName)
	for _, x := range fronts.list() {
		fmt.Fprintf(&b, posternForward, x.addr, x.name)
	}
	return b.String()
}

func startPostern(env tunnelEnv) (*tunnel, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	fronts, err := frontsFor(env.targets)
	if err != nil {
		return nil, err
	}
	srvConf, err := writeFile(env.dir, "postern-server.toml", posternServerConf(env.certs, env.window, listen, env.targets))
	if err != nil {
		return nil, err
	}
	cliConf, err := writeFile(env.dir, "postern-client.toml", posternClientConf(env.certs, env.window, listen, fronts))
	if err != nil {
		return nil, err
	}
	return startEnds(report.Postern, fronts, listen,
		[]string{env.bin, "run", "-c", srvConf}, []string{env.bin, "run", "-c", cliConf}, env.dir)
}

// stunnel: TLS 1.3 only, the cipher suite Go picks on AES-NI hardware
// (AES-128-GCM), the server verifying client certificates against the CA,
// the client verifying the server's chain and name.
const stunnelGlobal = `foreground = yes
pid =
debug = err
`

func startStunnel(env tunnelEnv) (*tunnel, error) {
	fronts, err := frontsFor(env.targets)
	if err != nil {
		return nil, err
	}
	tlsAddrs, err := frontsFor(env.targets)
	if err != nil {
		return nil, err
	}
	c := env.certs
	common := fmt.Sprintf("CAfile = %s\nverifyChain = yes\nsslVersionMin = TLSv1.3\nciphersuites = TLS_AES_128_GCM_SHA256\n", c.ca)
	var srv, cli strings.Builder
	srv.WriteString(stunnelGlobal)
	cli.WriteString(stunnelGlobal)
	for _, r := range env.targets.list() {
		tls, front := tlsAddrs.get(r.name), fronts.get(r.name)
		fmt.Fprintf(&srv, "\n[%s]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nrequireCert = yes\n%s",
			r.name, tls, r.addr, c.serverCert, c.serverKy, common)
		fmt.Fprintf(&cli, "\n[%s]\nclient = yes\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\ncheckHost = %s\nsni = %s\n%s",
			r.name, front, tls, c.clientCert, c.clientKy, serverName, serverName, common)
	}
	srvConf, err := writeFile(env.dir, "stunnel-server.conf", srv.String())
	if err != nil {
		return nil, err
	}
	cliConf, err := writeFile(env.dir, "stunnel-client.conf", cli.String())
	if err != nil {
		return nil, err
	}
	return startEnds(report.Stunnel, fronts, tlsAddrs.http,
		[]string{"stunnel4", srvConf}, []string{"stunnel4", cliConf}, env.dir)
}

// HAProxy in TCP mode, as shipped (two threads on two cores, its default
// buffers), TLS 1.3 with AES-128-GCM like the others, mutual verification.
const haproxyGlobal = `global
    maxconn %[1]d
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode tcp
    maxconn %[1]d
    timeout connect 10s
    timeout client 1h
    timeout server 1h
`

func startHAProxy(env tunnelEnv) (*tunnel, error) {
	fronts, err := frontsFor(env.targets)
	if err != nil {
		return nil, err
	}
	tlsAddrs, err := frontsFor(env.targets)
	if err != nil {
		return nil, err
	}
	c := env.certs
	var srv, cli strings.Builder
	fmt.Fprintf(&srv, haproxyGlobal, min(env.maxconn, 60000))
	fmt.Fprintf(&cli, haproxyGlobal, min(env.maxconn, 60000))
	for _, r := range env.targets.list() {
		tls, front := tlsAddrs.get(r.name), fronts.get(r.name)
		fmt.Fprintf(&srv, "\nfrontend tls_%s\n    bind %s ssl crt %s ca-file %s verify required\n    default_backend plain_%s\n\nbackend plain_%s\n    server target %s\n",
			r.name, tls, c.serverPEM, c.ca, r.name, r.name, r.addr)
		fmt.Fprintf(&cli, "\nfrontend plain_%s\n    bind %s\n    default_backend tls_%s\n\nbackend tls_%s\n    server peer %s ssl crt %s ca-file %s verify required verifyhost %s sni str(%s)\n",
			r.name, front, r.name, r.name, tls, c.clientPEM, c.ca, serverName, serverName)
	}
	srvConf, err := writeFile(env.dir, "haproxy-server.cfg", srv.String())
	if err != nil {
		return nil, err
	}
	cliConf, err := writeFile(env.dir, "haproxy-client.cfg", cli.String())
	if err != nil {
		return nil, err
	}
	return startEnds(report.HAProxy, fronts, tlsAddrs.http,
		[]string{"haproxy", "-db", "-f", srvConf}, []string{"haproxy", "-db", "-f", cliConf}, env.dir)
}
