package config

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/wire"
)

// identityKinds are the prefixes an allow entry may use, as the identity
// package names them; config explains a wrong kind in the user's words,
// then identity.Parse checks the whole entry, so a config that loads is
// one `postern run` accepts.
var identityKinds = []string{identity.KindDNS + ":", identity.KindIP + ":", identity.KindURI + ":",
	identity.KindCN + ":", identity.KindOU + ":", identity.KindSHA256 + ":", identity.KindSPKI + ":"}

// caScope ends an identity that names the CA which must have issued the
// peer's certificate: "dns:a.example.com from ca:sha256:<hex>".
const caScope = " from ca:"

// Validate checks values and cross-references. The first problem is
// returned, naming the file, the table's line and the key.
func (c *Config) Validate() error {
	if len(c.Servers) == 0 && len(c.Clients) == 0 {
		return c.errorf(0, "nothing to do: add a [[server]] to accept tunnels or a [[client]] to dial one")
	}
	if err := notUnix(c.Admin.Listen, "admin.listen"); err != nil {
		return c.errorf(0, "%v", err)
	}
	if err := checkMinVersion(c.TLS.MinVersion); err != nil {
		return c.errorf(0, "tls.min_version: %v", err)
	}
	if err := c.validateTunnel(); err != nil {
		return err
	}
	if err := c.validateTokens(); err != nil {
		return err
	}
	for i := range c.Servers {
		if err := c.validateServer(&c.Servers[i]); err != nil {
			return err
		}
	}
	clients := map[string]bool{}
	for i := range c.Clients {
		cl := &c.Clients[i]
		if err := c.validateClient(cl); err != nil {
			return err
		}
		if clients[cl.Name] {
			return c.errorf(cl.Line, "client %q: name used by another [[client]]", cl.Name)
		}
		clients[cl.Name] = true
	}
	listens := map[Address]int{}
	for i := range c.Forwards {
		f := &c.Forwards[i]
		if err := c.validateForward(f, clients); err != nil {
			return err
		}
		if line, dup := listens[f.Listen]; dup && !strings.HasSuffix(string(f.Listen), ":0") {
			return c.errorf(f.Line, "forward %s: listen address already used by the forward on line %d", f.Listen, line)
		}
		listens[f.Listen] = f.Line
	}
	services := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		if err := c.validateService(s); err != nil {
			return err
		}
		if services[s.Name] {
			return c.errorf(s.Line, "service %q: name used by another [[service]]", s.Name)
		}
		services[s.Name] = true
	}
	if err := c.validateLog(); err != nil {
		return err
	}
	if err := c.validateACME(); err != nil {
		return err
	}
	return c.validateCA()
}

func (c *Config) validateTunnel() error {
	if c.Procs < 0 {
		return c.errorf(c.lines[""]["procs"], "procs: %d is negative (0: half the CPUs, at least 1)", c.Procs)
	}
	t := c.Tunnel
	if t.StreamWindow < MinStreamWindow || t.StreamWindow > 1<<30 {
		return c.errorf(0, "tunnel.stream_window: %d bytes is outside 256KiB..1GiB", t.StreamWindow)
	}
	if t.MaxStreams < 0 {
		return c.errorf(0, "tunnel.max_streams: must be positive")
	}
	if t.MaxTunnelsPerPeer < 0 {
		return c.errorf(0, "tunnel.max_tunnels_per_peer: must be positive")
	}
	// A budget must hold at least one stream's initial window.
	if t.MaxBuffered < MinStreamWindow {
		return c.errorf(0, "tunnel.max_buffered: %d bytes is below 256KiB, one stream's initial window", t.MaxBuffered)
	}
	if t.MaxTunnelBuffered < MinStreamWindow {
		return c.errorf(0, "tunnel.max_tunnel_buffered: %d bytes is below 256KiB, one stream's initial window", t.MaxTunnelBuffered)
	}
	return nil
}

func (c *Config) validateServer(s *Server) error {
	where := fmt.Sprintf("server %s", s.Listen)
	if s.Listen == "" {
		return c.errorf(s.Line, "[[server]]: listen is required, like listen = \"0.0.0.0:7443\"")
	}
	if err := notUnix(s.Listen, "listen"); err != nil {
		return c.errorf(s.Line, "%s: %v", where, err)
	}
	if err := c.validateTLS(s.Line, where, s.TLS); err != nil {
		return err
	}
	if s.MaxHandshakes < 0 {
		return c.errorf(s.Line, "%s: max_handshakes must be positive", where)
	}
	if s.MaxHandshakesPerAddress < 0 {
		return c.errorf(s.Line, "%s: max_handshakes_per_address must be positive", where)
	}
	for _, p := range s.Peer {
		if err := checkAllow(p); err != nil {
			return c.errorf(s.Line, "%s: peer %q: %v", where, p, err)
		}
	}
	if !*s.Mux && s.Service == "" {
		return c.errorf(s.Line, "%s: mux = false needs service = \"NAME\": the [[service]] every plain TLS connection reaches", where)
	}
	if *s.Mux && s.Service != "" {
		return c.errorf(s.Line, "%s: service is only for mux = false servers; tunnels name their service per stream", where)
	}
	return nil
}

func (c *Config) validateClient(cl *Client) error {
	if cl.Name == "" {
		return c.errorf(cl.Line, "[[client]]: name is required; forwards refer to it with via = \"NAME\"")
	}
	where := fmt.Sprintf("client %q", cl.Name)
	if len(cl.Servers) == 0 {
		return c.errorf(cl.Line, "%s: servers is required, like servers = [\"hub.example.com:7443\"]", where)
	}
	for _, s := range cl.Servers {
		if err := notUnix(s, "servers"); err != nil {
			return c.keyErrorf(cl, "servers", "%s: %v", where, err)
		}
	}
	if err := c.validateTLS(cl.Line, where, cl.TLS); err != nil {
		return err
	}
	if cl.Tunnels < 1 || cl.Tunnels > 64 {
		return c.errorf(cl.Line, "%s: tunnels = %d: use 1 to 64", where, cl.Tunnels)
	}
	if cl.Strategy != "ordered" && cl.Strategy != "round-robin" && cl.Strategy != "all" {
		return c.errorf(cl.Line, "%s: strategy: %q is not one of ordered, round-robin, all", where, cl.Strategy)
	}
	if err := c.validateHubs(cl, where); err != nil {
		return err
	}
	for _, p := range cl.Peer {
		if err := checkAllow(p); err != nil {
			return c.errorf(cl.Line, "%s: peer %q: %v", where, p, err)
		}
	}
	if cl.BackoffMin > cl.BackoffMax {
		return c.errorf(cl.Line, "%s: backoff_min %s is larger than backoff_max %s", where, cl.BackoffMin, cl.BackoffMax)
	}
	return c.validateProxy(cl, where)
}

// validateProxy checks proxy and its credentials. The password is never
// in the config: a URL that carries one is refused, and the message shows
// it redacted.
func (c *Config) validateProxy(cl *Client, where string) error {
	keyErr := func(key, format string, args ...any) error {
		return c.keyErrorf(cl, key, "%s: %s: %s", where, key, fmt.Sprintf(format, args...))
	}
	if cl.Proxy == "" {
		for _, k := range []struct{ key, value string }{
			{"proxy_password_file", cl.ProxyPasswordFile}, {"proxy_password_env", cl.ProxyPasswordEnv}, {"proxy_auth", cl.ProxyAuth},
		} {
			if k.value != "" {
				return keyErr(k.key, "set, but proxy is not: add proxy = \"http://USER@HOST:PORT\" (or remove %s)", k.key)
			}
		}
		return nil
	}
	user := ""
	if cl.Proxy != "env" {
		u, err := ParseProxyURL(cl.Proxy)
		if err != nil {
			return keyErr("proxy", "%v", err)
		}
		user = u.User.Username()
		if u.Scheme != "http" && cl.ProxyAuth == "ntlm" {
			return keyErr("proxy_auth", "\"ntlm\" is for http:// proxies; a %s proxy takes a user name and password", u.Scheme)
		}
	}
	if cl.ProxyAuth != "basic" && cl.ProxyAuth != "ntlm" {
		return keyErr("proxy_auth", "%q is not one of basic, ntlm", cl.ProxyAuth)
	}
	if cl.ProxyPasswordFile != "" && cl.ProxyPasswordEnv != "" {
		return keyErr("proxy_password_env", "set proxy_password_file or proxy_password_env, not both")
	}
	hasPassword := cl.ProxyPasswordFile != "" || cl.ProxyPasswordEnv != ""
	switch {
	case cl.Proxy == "env":
		// The user name, if any, comes from the environment variable; a
		// password source here completes it.
	case user != "" && !hasPassword:
		return keyErr("proxy", "names user %q but no password: set proxy_password_file = \"PATH\" or proxy_password_env = \"VARIABLE\"", user)
	case user == "" && hasPassword:
		key := "proxy_password_file"
		if cl.ProxyPasswordEnv != "" {
			key = "proxy_password_env"
		}
		return keyErr(key, "set, but proxy names no user: write it as %q", withUser(cl.Proxy))
	case user == "" && cl.ProxyAuth == "ntlm":
		return keyErr("proxy_auth", "\"ntlm\" needs a user: write proxy as %q and set proxy_password_file", withUser(cl.Proxy))
	}
	return nil
}

// ParseProxyURL parses a proxy written as "http://[user@]host:port" or
// "socks5://[user@]host:port". A password in the URL is an error: it
// belongs in proxy_password_file or proxy_password_env.
func ParseProxyURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("%q: start with http:// or socks5:// (or write proxy = \"env\" to use HTTPS_PROXY and NO_PROXY)", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%q: %v", redact(raw), err)
	}
	if _, set := u.User.Password(); set {
		return nil, fmt.Errorf("%q has the password inline: remove it from the URL and put it in a file named by proxy_password_file (or an environment variable named by proxy_password_env)", u.Redacted())
	}
	if u.Scheme != "http" && u.Scheme != "socks5" {
		return nil, fmt.Errorf("%q: scheme %q is not one of http, socks5 (or write proxy = \"env\")", raw, u.Scheme)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q: write only %s://[USER@]HOST:PORT, without a path or query", raw, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q: no host, like %s://proxy.example.com:3128", raw, u.Scheme)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("%q: no port, like %s://%s:%s", raw, u.Scheme, u.Host, map[string]string{"http": "3128", "socks5": "1080"}[u.Scheme])
	}
	if err := checkAddress(u.Host); err != nil {
		return nil, err
	}
	return u, nil
}

// redact hides what may be a password in a URL that did not parse.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok || !strings.Contains(userinfo, ":") {
		return raw
	}
	user, _, _ := strings.Cut(userinfo, ":")
	return scheme + "://" + user + ":xxxxx@" + host
}

// withUser writes a proxy URL with a USER placeholder.
func withUser(proxy string) string {
	if proxy == "env" {
		return proxy
	}
	scheme, rest, _ := strings.Cut(proxy, "://")
	return scheme + "://USER@" + rest
}

// validateTLS checks that a tunnel endpoint has what mutual TLS needs. There
// is no way to run without verifying the peer.
func (c *Config) validateTLS(line int, where string, t TLS) error {
	switch {
	case t.Cert == "":
		return c.errorf(line, "%s: no certificate: set cert in [tls] or in this table", where)
	case t.Key == "":
		return c.errorf(line, "%s: no private key: set key in [tls] or in this table", where)
	case t.CA == "":
		return c.errorf(line, "%s: no ca: Postern always verifies the peer, so it needs the CA bundle that signs peer certificates", where)
	}
	if err := checkMinVersion(t.MinVersion); err != nil {
		return c.errorf(line, "%s: min_version: %v", where, err)
	}
	if t.CRLStale != "refuse" && t.CRLStale != "warn" {
		return c.errorf(line, "%s: crl_stale: %q is not one of refuse, warn", where, t.CRLStale)
	}
	if t.OCSP != "off" && t.OCSP != "soft" && t.OCSP != "hard" {
		return c.errorf(line, "%s: ocsp: %q is not one of off, soft, hard", where, t.OCSP)
	}
	return nil
}

func checkMinVersion(v string) error {
	_, err := TLSVersion(v)
	return err
}

// TLSVersion is the crypto/tls constant of a min_version value.
func TLSVersion(v string) (uint16, error) {
	switch v {
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.2":
		return tls.VersionTLS12, nil
	}
	return 0, fmt.Errorf("%q is not supported: use \"1.3\" (default) or \"1.2\"", v)
}

func (c *Config) validateForward(f *Forward, clients map[string]bool) error {
	if f.Listen == "" {
		return c.errorf(f.Line, "[[forward]]: listen is required, like listen = \"127.0.0.1:15432\"")
	}
	where := fmt.Sprintf("forward %s", f.Listen)
	if err := checkUnixLength(f.Listen); err != nil {
		return c.errorf(f.Line, "%s: listen: %v", where, err)
	}
	if err := checkMode(f); err != nil {
		return c.errorf(f.Line, "%s: %v", where, err)
	}
	if f.Service == "" {
		return c.errorf(f.Line, "%s: service is required: the name of a [[service]] on the peer", where)
	}
	if err := wire.CheckServiceName(f.Service); err != nil {
		return c.errorf(f.Line, "%s: service %q: %v", where, f.Service, err)
	}
	if f.Via == "" {
		return c.errorf(f.Line, "%s: via is required: the name of the [[client]] whose tunnel carries it", where)
	}
	if clients[f.Via] {
		return nil
	}
	if isIdentity(f.Via) {
		// A reverse forward: via names the connected peer that offers the
		// service.
		if err := checkAllow(f.Via); err != nil {
			return c.errorf(f.Line, "%s: via %q: %v", where, f.Via, err)
		}
		if len(c.Servers) == 0 {
			return c.errorf(f.Line, "%s: via %q names a peer identity (a reverse forward), but this agent has no [[server]] for peers to connect to", where, f.Via)
		}
		return nil
	}
	return c.errorf(f.Line, "%s: via %q: no [[client]] has that name (for a reverse forward, name the peer identity, like via = \"dns:partner.example.com\")", where, f.Via)
}

func (c *Config) validateService(s *Service) error {
	if s.Name == "" {
		return c.errorf(s.Line, "[[service]]: name is required")
	}
	where := fmt.Sprintf("service %q", s.Name)
	if err := wire.CheckServiceName(s.Name); err != nil {
		return c.errorf(s.Line, "%s: name: %v", where, err)
	}
	switch {
	case s.Target == "" && len(s.Targets) == 0:
		return c.errorf(s.Line, "%s: target is required, like target = \"10.0.0.5:5432\" (or targets = [\"10.0.0.5:5432\", \"10.0.0.6:5432\"] for several)", where)
	case s.Target != "" && len(s.Targets) > 0:
		return c.errorf(s.Line, "%s: set target or targets, not both: move %q into targets", where, s.Target)
	}
	for _, t := range s.TargetList() {
		if t == "" {
			return c.errorf(s.Line, "%s: targets: an empty address", where)
		}
		if err := checkUnixLength(t); err != nil {
			return c.errorf(s.Line, "%s: target: %v", where, err)
		}
	}
	seen := map[Address]bool{}
	for _, t := range s.Targets {
		if seen[t] {
			return c.errorf(s.Line, "%s: targets: %q is listed twice", where, t)
		}
		seen[t] = true
	}
	switch s.TargetStrategy {
	case "failover", "round-robin":
	default:
		return c.errorf(s.Line, "%s: target_strategy: %q is not one of failover, round-robin", where, s.TargetStrategy)
	}
	for _, a := range s.Allow {
		if err := checkAllow(a); err != nil {
			return c.errorf(s.Line, "%s: allow %q: %v", where, a, err)
		}
	}
	switch s.ProxyProtocol {
	case "", "v1", "v2":
	default:
		return c.errorf(s.Line, "%s: proxy_protocol: %q is not one of v1, v2 (or leave it out)", where, s.ProxyProtocol)
	}
	return c.validateLimits(s, where)
}

// validateLimits checks a service's limits: none negative (0 is off).
func (c *Config) validateLimits(s *Service, where string) error {
	for _, l := range []struct {
		key string
		v   float64
	}{
		{"max_streams_per_peer", float64(s.MaxStreamsPerPeer)},
		{"max_streams", float64(s.MaxStreams)},
		{"streams_per_second_per_peer", s.StreamsPerSecondPerPeer},
		{"streams_per_second", s.StreamsPerSecond},
		{"streams_burst", float64(s.StreamsBurst)},
		{"bandwidth_per_peer", float64(s.BandwidthPerPeer)},
		{"bandwidth", float64(s.Bandwidth)},
	} {
		if l.v < 0 || math.IsNaN(l.v) || math.IsInf(l.v, 0) {
			return c.errorf(s.Line, "%s: %s: %v must be a positive number (leave it out for no limit)", where, l.key, l.v)
		}
	}
	if s.StreamsBurst > 0 && s.StreamsPerSecond == 0 && s.StreamsPerSecondPerPeer == 0 {
		return c.errorf(s.Line, "%s: streams_burst is set but neither streams_per_second nor streams_per_second_per_peer is: set a rate too, or leave streams_burst out", where)
	}
	return nil
}

// isIdentity reports whether s is written as a peer identity ("dns:...",
// "*") rather than a [[client]] name.
func isIdentity(s string) bool {
	s, _, _ = strings.Cut(s, caScope)
	if s == "*" {
		return true
	}
	for _, k := range identityKinds {
		if strings.HasPrefix(s, k) {
			return true
		}
	}
	return false
}

func checkAllow(entry string) error {
	a, ref, scoped := strings.Cut(entry, caScope)
	if scoped && !strings.HasPrefix(ref, "sha256:") && !strings.HasPrefix(ref, "spki:") {
		return fmt.Errorf("%q: name the CA by sha256:<fingerprint of its certificate> or spki:<hash of its key>", caScope+ref)
	}
	if a == "*" {
		return nil
	}
	for _, k := range identityKinds {
		if v, ok := strings.CutPrefix(a, k); ok {
			if v == "" {
				return fmt.Errorf("nothing after %q", k)
			}
			_, err := identity.Parse(entry)
			return err
		}
	}
	if hint := suggestIdentity(a); hint != "" {
		return fmt.Errorf("unknown kind%s (identities are written kind:value, kind one of %s)", didYouMean(hint), strings.Join(identityKinds, " "))
	}
	return fmt.Errorf("unknown kind: start with one of %s, or write \"*\" for any verified peer", strings.Join(identityKinds, " "))
}

func (c *Config) validateLog() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return c.errorf(0, "log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return c.errorf(0, "log.format: %q is not one of text, json", c.Log.Format)
	}
	return nil
}

func (c *Config) errorf(line int, format string, args ...any) error {
	return &Error{File: c.Path, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// keyErrorf is errorf at the line and column where cl sets key, or at the
// table's line when the key is not written there.
func (c *Config) keyErrorf(cl *Client, key, format string, args ...any) error {
	if p, ok := cl.keys[key]; ok {
		return &Error{File: c.Path, Line: p.line, Col: p.col, Msg: fmt.Sprintf(format, args...)}
	}
	return c.errorf(cl.Line, format, args...)
}

// setLines records the line of each [[server]], [[client]], [[forward]] and
// [[service]] header, in order, so messages can point at the table.
func (c *Config) setLines(data []byte) {
	lines := map[string][]int{}
	var clientKeys []map[string]position // per [[client]], where each key is set
	inClient := false
	forEachLine(data, func(n int, text string) {
		if name, ok := arrayHeader(text); ok {
			lines[name] = append(lines[name], n)
			inClient = name == "client"
			if inClient {
				clientKeys = append(clientKeys, map[string]position{})
			}
			return
		}
		if _, ok := tableHeader(text); ok {
			inClient = false
			return
		}
		if !inClient {
			return
		}
		trimmed := strings.TrimLeft(text, " \t")
		key, _, ok := strings.Cut(trimmed, "=")
		if key = strings.Trim(strings.TrimSpace(key), `"`); ok && key != "" {
			if _, seen := clientKeys[len(clientKeys)-1][key]; !seen {
				clientKeys[len(clientKeys)-1][key] = position{n, len(text) - len(trimmed) + 1}
			}
		}
	})
	at := func(name string, i int) int {
		if i < len(lines[name]) {
			return lines[name][i]
		}
		return 0
	}
	for i := range c.Servers {
		c.Servers[i].Line = at("server", i)
	}
	for i := range c.Clients {
		c.Clients[i].Line = at("client", i)
		if i < len(clientKeys) {
			c.Clients[i].keys = clientKeys[i]
		}
	}
	for i := range c.Forwards {
		c.Forwards[i].Line = at("forward", i)
	}
	for i := range c.Services {
		c.Services[i].Line = at("service", i)
	}
}

func forEachLine(data []byte, fn func(n int, text string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fn(n, sc.Text())
	}
}

func arrayHeader(line string) (string, bool) {
	t := strings.TrimSpace(line)
	if !strings.HasPrefix(t, "[[") {
		return "", false
	}
	end := strings.Index(t, "]]")
	if end < 0 {
		return "", false
	}
	return strings.TrimSpace(t[2:end]), true
}

func tableHeader(line string) (string, bool) {
	t := strings.TrimSpace(line)
	if name, ok := arrayHeader(t); ok {
		return name, true
	}
	if !strings.HasPrefix(t, "[") {
		return "", false
	}
	end := strings.Index(t, "]")
	if end < 0 {
		return "", false
	}
	return strings.TrimSpace(t[1:end]), true
}

// keyPosition finds where key k is written: the line under the right table
// header whose text starts with the key's last part. It returns 0, 0 when
// the key cannot be found (for example when written as a dotted key).
func keyPosition(data []byte, k toml.Key) (line, col int) {
	if len(k) == 0 {
		return 0, 0
	}
	table := strings.Join(k[:len(k)-1], ".")
	last := k[len(k)-1]
	current := ""
	forEachLine(data, func(n int, text string) {
		if line > 0 {
			return
		}
		if name, ok := tableHeader(text); ok {
			current = name
			if name == k.String() {
				line, col = n, strings.Index(text, "[")+1
			}
			return
		}
		if current != table {
			return
		}
		trimmed := strings.TrimLeft(text, " \t")
		rest, ok := strings.CutPrefix(trimmed, last)
		if !ok {
			rest, ok = strings.CutPrefix(trimmed, `"`+last+`"`)
		}
		if ok && strings.HasPrefix(strings.TrimLeft(rest, " \t"), "=") {
			line, col = n, len(text)-len(trimmed)+1
		}
	})
	return line, col
}

// validateHubs checks hubs and what strategy = "all" rules out: with it
// each hub gets exactly one tunnel, so tunnels > 1 is refused rather than
// silently read as tunnels per hub, and mux = false has no tunnels to keep.
func (c *Config) validateHubs(cl *Client, where string) error {
	if cl.Strategy != "all" {
		if cl.Hubs != 0 {
			return c.keyErrorf(cl, "hubs", "%s: hubs is only for strategy = \"all\" (a tunnel to every hub of a pool)", where)
		}
		return nil
	}
	if cl.Hubs < 0 || cl.Hubs > 64 {
		return c.keyErrorf(cl, "hubs", "%s: hubs = %d: use 1 to 64, or leave it out for one hub per server", where, cl.Hubs)
	}
	if cl.Tunnels > 1 {
		return c.keyErrorf(cl, "tunnels", "%s: tunnels = %d: strategy = \"all\" keeps one tunnel to each hub; set hubs to the number of hubs instead", where, cl.Tunnels)
	}
	if cl.Mux != nil && !*cl.Mux {
		return c.keyErrorf(cl, "strategy", "%s: strategy = \"all\" needs tunnels; mux = false dials one connection per forwarded connection", where)
	}
	return nil
}
