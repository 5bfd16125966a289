// Package config loads and validates a Postern agent's TOML file.
//
// Load reads the file strictly (unknown keys and wrong types are errors with
// file, line and column), fills in the defaults listed in Defaults, resolves
// relative paths against the file's folder and runs Validate. Errors name the
// file, the line and the key in the user's own words.
//
// Package config imports only wire from Postern, so that a service name
// that loads is one the stream protocol carries, and hsm for the syntax of
// pkcs11: URIs.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/postern-tunnel/postern/hsm"
)

// Config is one agent's configuration: one file, one process.
type Config struct {
	Name            string   `toml:"name"`             // shown in logs and metrics
	ShutdownTimeout Duration `toml:"shutdown_timeout"` // drain budget on SIGTERM
	// Procs is how many threads run the agent's Go code at once
	// (GOMAXPROCS): 0 (the default) is half the CPUs the process may use,
	// at least 1. The GOMAXPROCS environment variable, when set, wins.
	Procs int `toml:"procs"`

	TLS      TLS       `toml:"tls"`     // defaults for every tunnel
	Tunnel   Tunnel    `toml:"tunnel"`  // multiplexing and limits
	Servers  []Server  `toml:"server"`  // accept tunnels
	Clients  []Client  `toml:"client"`  // dial tunnels
	Forwards []Forward `toml:"forward"` // plaintext listeners
	Services []Service `toml:"service"` // what peers may reach
	Admin    Admin     `toml:"admin"`
	ACME     *ACME     `toml:"acme"`   // the [[server]] certificate from an ACME CA, or nil
	CA       *CA       `toml:"ca"`     // this agent signs for its peers (enrollment, renewal), or nil
	Enroll   *Enroll   `toml:"enroll"` // enroll on first start with a token file, or nil
	Log      Log       `toml:"log"`

	// Path is the file the config was loaded from ("" when built in code).
	Path string `toml:"-"`

	lines keyLines // where each key is written, for messages (TLSKeyAt)
}

// TLS holds certificate material. [tls] sets the agent's defaults; a
// [[server]] or [[client]] may override any key.
type TLS struct {
	Cert           string   `toml:"cert"`            // PEM chain, leaf first
	Key            string   `toml:"key"`             // PEM private key
	CA             string   `toml:"ca"`              // PEM bundle trusted for peers
	CRL            []string `toml:"crl"`             // revocation lists (PEM or DER), reloaded when changed
	CRLStale       string   `toml:"crl_stale"`       // past its nextUpdate: "refuse" (default) or "warn"
	OCSP           string   `toml:"ocsp"`            // "off" (default), "soft" or "hard"
	MinVersion     string   `toml:"min_version"`     // "1.3" (default) or "1.2"
	ExpiryWarning  Duration `toml:"expiry_warning"`  // warn when a certificate expires within this
	ReloadInterval Duration `toml:"reload_interval"` // how often cert, key, ca and crl files are checked for changes
	RenewBefore    Duration `toml:"renew_before"`    // renew a certificate a peer's [ca] signed this long before expiry; 0 = a third of its lifetime
}

// Tunnel tunes the multiplexed session and the per-stream protocol.
type Tunnel struct {
	StreamWindow      Size     `toml:"stream_window"`        // the most a stream's receive window grows to
	KeepaliveInterval Duration `toml:"keepalive_interval"`   // ping period
	KeepaliveTimeout  Duration `toml:"keepalive_timeout"`    // time for a ping answer before the tunnel is declared dead
	OpenTimeout       Duration `toml:"open_timeout"`         // wait for the peer's answer to an open request
	MaxStreams        int      `toml:"max_streams"`          // streams a peer may have open on one tunnel
	WriteTimeout      Duration `toml:"write_timeout"`        // how long a queued write may wait on a slow, full link
	MaxBuffered       Size     `toml:"max_buffered"`         // received, unread bytes of every stream of every tunnel
	MaxTunnelBuffered Size     `toml:"max_tunnel_buffered"`  // received, unread bytes of one tunnel's streams
	MaxTunnelsPerPeer int      `toml:"max_tunnels_per_peer"` // tunnels one peer certificate may hold open at once
}

// Server is a listener for tunnels.
type Server struct {
	TLS
	Listen           Address  `toml:"listen"`
	Mux              *bool    `toml:"mux"`     // false: plain mutual-TLS peers, one connection per stream
	Service          string   `toml:"service"` // with mux = false: the one service every connection reaches
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	HelloTimeout     Duration `toml:"hello_timeout"`  // time for the client's first TLS record (its ClientHello)
	MaxHandshakes    int      `toml:"max_handshakes"` // TLS handshakes in progress at once
	// TLS handshakes in progress from one IPv4 address or IPv6 /64
	MaxHandshakesPerAddress int `toml:"max_handshakes_per_address"`
	// Peer, if set, are the identities a client certificate must match,
	// besides its chain, to open a tunnel at all (the handshake refuses
	// others; a refused Postern client learns why).
	Peer []string `toml:"peer"`

	Line int `toml:"-"` // line of the [[server]] header, for messages
}

// Client dials a tunnel to one of its servers.
type Client struct {
	TLS
	Name        string    `toml:"name"`
	Servers     []Address `toml:"servers"`     // failover order
	ServerName  string    `toml:"server_name"` // name the server certificate must carry
	DialTimeout Duration  `toml:"dial_timeout"`
	BackoffMin  Duration  `toml:"backoff_min"` // first reconnect delay
	BackoffMax  Duration  `toml:"backoff_max"` // reconnect delay cap
	Peer        []string  `toml:"peer"`        // identities the server must match, besides the chain
	Tunnels     int       `toml:"tunnels"`     // parallel tunnels kept open
	Strategy    string    `toml:"strategy"`    // "ordered" (failover, default), "round-robin" or "all"
	Mux         *bool     `toml:"mux"`         // false: one plain TLS connection per forwarded connection

	// Hubs is, with strategy = "all", how many distinct hubs (told apart by
	// their public keys) to hold one tunnel each to; 0 = one per server.
	// Behind a load balancer servers has one address and hubs says how
	// many hubs stand behind it.
	Hubs int `toml:"hubs"`

	MaxTunnelLifetime Duration `toml:"max_tunnel_lifetime"` // re-establish tunnels this often (make-before-break)

	// Proxy reaches the servers through a proxy: "http://[user@]host:port"
	// (HTTP CONNECT), "socks5://[user@]host:port", or "env" (HTTPS_PROXY,
	// ALL_PROXY and NO_PROXY, as curl reads them). "" dials directly.
	Proxy string `toml:"proxy"`
	// The proxy user's password comes from a file (its first line) or an
	// environment variable, never from the config itself.
	ProxyPasswordFile string `toml:"proxy_password_file"`
	ProxyPasswordEnv  string `toml:"proxy_password_env"`
	ProxyAuth         string `toml:"proxy_auth"` // HTTP proxies: "basic" (default) or "ntlm"

	Line int `toml:"-"`
	// keys holds where this table sets each key, for messages.
	keys map[string]position
}

// position is where a key is written: line and column, from 1.
type position struct{ line, col int }

// Forward is a plaintext listener whose connections go to a service on a peer.
type Forward struct {
	Listen     Address  `toml:"listen"`
	Service    string   `toml:"service"`
	Via        string   `toml:"via"`         // a [[client]] name, or a peer identity for a reverse forward
	TunnelWait Duration `toml:"tunnel_wait"` // how long a connection waits for a tunnel
	// Mode is the permission of a Unix socket listen ("0660" by default),
	// in octal.
	Mode string `toml:"mode"`

	Line int `toml:"-"`
}

// Service is a target this agent connects to on a peer's behalf.
type Service struct {
	Name        string   `toml:"name"`
	Target      Address  `toml:"target"`
	Allow       []string `toml:"allow"` // peer identities; empty denies everyone
	DialTimeout Duration `toml:"dial_timeout"`
	// ProxyProtocol sends the original client address to the target first:
	// "" (off), "v1" or "v2".
	ProxyProtocol string `toml:"proxy_protocol"`
	// Targets lists several targets in place of target: tried in
	// TargetStrategy's order, skipping those marked down.
	Targets []Address `toml:"targets"`
	// TargetStrategy is "failover" (default: the first reachable target in
	// order) or "round-robin" (each stream starts at the next target).
	TargetStrategy string `toml:"target_strategy"`
	// HealthInterval, when set, connects to each target this often (a TCP
	// or Unix connect, closed at once) and marks it up or down; when left
	// out, only a failed dial marks a target down, for TargetDownFor.
	HealthInterval Duration `toml:"health_interval"`

	// Limits; 0 (the default) is no limit. "Per peer" is per identity:
	// the [[client]] name of a tunnel this agent dialed, else the allow
	// entry the peer matched, or its certificate's name when that entry
	// matches many peers (a wildcard). The others hold for the service as
	// a whole. Over a stream limit a stream is refused (overloaded); over
	// a bandwidth it is paced, in each direction.
	MaxStreamsPerPeer       int     `toml:"max_streams_per_peer"`        // streams open at once
	MaxStreams              int     `toml:"max_streams"`                 // streams open at once, all peers
	StreamsPerSecondPerPeer float64 `toml:"streams_per_second_per_peer"` // new streams per second
	StreamsPerSecond        float64 `toml:"streams_per_second"`          // new streams per second, all peers
	StreamsBurst            int     `toml:"streams_burst"`               // new streams at once above the rate; default: one second's worth
	BandwidthPerPeer        Size    `toml:"bandwidth_per_peer"`          // bytes per second, each way
	Bandwidth               Size    `toml:"bandwidth"`                   // bytes per second, each way, all peers

	Line int `toml:"-"`
}

// Admin is the optional HTTP endpoint for health and metrics.
type Admin struct {
	Listen Address `toml:"listen"`
}

// Log selects the log level and format.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error
	Format string `toml:"format"` // text|json
}

// Targets of a [[service]]: the default strategy, and how long a failed
// dial marks a target down when the service has no health_interval.
const (
	DefaultTargetStrategy = "failover"
	TargetDownFor         = 30 * time.Second
)

// Defaults, in one place. The README's config reference lists the same.
const (
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMinVersion        = "1.3"
	DefaultCRLStale          = "refuse"
	DefaultOCSP              = "off"
	DefaultExpiryWarning     = 30 * 24 * time.Hour
	DefaultReloadInterval    = 10 * time.Second
	DefaultTunnels           = 1
	DefaultStrategy          = "ordered"
	DefaultStreamWindow      = 16 << 20
	MinStreamWindow          = 256 << 10
	DefaultKeepaliveInterval = 10 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
	DefaultOpenTimeout       = 10 * time.Second
	DefaultMaxStreams        = 16384
	DefaultWriteTimeout      = 60 * time.Second
	DefaultMaxBuffered       = 1 << 30
	DefaultMaxTunnelBuffered = 256 << 20
	DefaultMaxTunnelsPerPeer = 8
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMaxHandshakes     = 128
	DefaultDialTimeout       = 10 * time.Second
	DefaultBackoffMin        = 200 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultTunnelWait        = 10 * time.Second
	DefaultProxyAuth         = "basic" // when proxy is set
	DefaultEnvProxyPort      = "1080"  // proxy = "env": a variable's URL without a port, as curl reads it
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "text"
)

// Defaults of the handshake bounds per [[server]].
const (
	DefaultMaxHandshakesPerAddress = 8
	DefaultHelloTimeout            = 3 * time.Second
)

// Error is a problem in a config file, with where it is.
type Error struct {
	File string
	Line int // 0 when unknown
	Col  int // 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("config %s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("config %s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config %s: %s", e.File, e.Msg)
}

// Load reads, defaults, resolves and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for data already read; path names the file in messages and
// anchors relative paths.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{Path: path}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, decodeError(path, data, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		k := undecoded[0]
		line, col := keyPosition(data, k)
		return nil, &Error{File: path, Line: line, Col: col, Msg: fmt.Sprintf("unknown key %q", k.String()) + didYouMean(suggestKey(k))}
	}
	c.setLines(data)
	c.lines = keyLines{}
	c.lines.record(data)
	c.SetDefaults()
	c.resolvePaths(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeError(path string, data []byte, err error) error {
	e := &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	key := ""
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key, e.Line, e.Col, e.Msg = pe.LastKey, pe.Position.Line, pe.Position.Col, pe.Message
	} else if m := typeErrorText.FindStringSubmatch(err.Error()); m != nil {
		// The decoder reports a value of the wrong type as plain text,
		// without a column and in Go's words.
		e.Line, _ = strconv.Atoi(m[1])
		key, e.Msg = m[2], typeMessage(m[3])
	}
	if key == "" {
		return e
	}
	// The decoder places a bad value inside an array of tables at the key's
	// last occurrence; find the occurrence that actually fails.
	if line, col := badValuePosition(data, key); line > 0 {
		e.Line, e.Col = line, col
	}
	e.Msg = key + ": " + e.Msg
	return e
}

var (
	typeErrorText = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)
	typeMismatch  = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (.+)$`)
	tableMismatch = regexp.MustCompile(`^type mismatch for \S+: expected table but found (\S+)$`)
	typeNames     = map[string]string{
		"string": "a string", "int64": "an integer", "integer": "an integer",
		"float64": "a number", "float": "a number", "bool": "true or false", "boolean": "true or false",
		"[]any": "an array", "slice": "an array", "map[string]any": "a table", "map": "a table", "table": "a table",
		"time.Time": "a date", "toml.LocalDate": "a date", "toml.LocalDatetime": "a date", "toml.LocalTime": "a time",
	}
)

// typeMessage says what a value of the wrong type should have been.
func typeMessage(msg string) string {
	name := func(t string) string {
		if n, ok := typeNames[t]; ok {
			return n
		}
		return t
	}
	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("must be %s, not %s", name(m[2]), name(m[1]))
	}
	if m := tableMismatch.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("must be a table, not %s", name(m[1]))
	}
	return msg
}

// badValuePosition finds the first line that sets key to a value the
// decoder refuses, by decoding each such line on its own under its table
// header. It returns the line and the value's column, or 0, 0.
func badValuePosition(data []byte, key string) (line, col int) {
	parts := strings.Split(key, ".")
	if len(parts) > 2 {
		return 0, 0
	}
	table, last := "", parts[len(parts)-1]
	if len(parts) == 2 {
		table = parts[0]
	}
	current, header := "", ""
	forEachLine(data, func(n int, text string) {
		if line > 0 {
			return
		}
		if name, ok := tableHeader(text); ok {
			current, header = name, strings.TrimSpace(text)
			return
		}
		trimmed := strings.TrimLeft(text, " \t")
		rest, ok := strings.CutPrefix(trimmed, last)
		if !ok || current != table || !strings.HasPrefix(strings.TrimLeft(rest, " \t"), "=") {
			return
		}
		if _, err := toml.Decode(trimmed, &map[string]any{}); err != nil {
			return // not a whole value on one line
		}
		var probe Config
		if _, err := toml.Decode(header+"\n"+trimmed, &probe); err != nil {
			value := strings.TrimLeft(strings.TrimLeft(rest, " \t")[1:], " \t")
			line, col = n, len(text)-len(value)+1
		}
	})
	return line, col
}

// SetDefaults fills every unset value with its default.
func (c *Config) SetDefaults() {
	setDur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = DefaultMinVersion
	}
	if c.TLS.CRLStale == "" {
		c.TLS.CRLStale = DefaultCRLStale
	}
	if c.TLS.OCSP == "" {
		c.TLS.OCSP = DefaultOCSP
	}
	setDur(&c.TLS.ExpiryWarning, DefaultExpiryWarning)
	setDur(&c.TLS.ReloadInterval, DefaultReloadInterval)
	t := &c.Tunnel
	if t.StreamWindow == 0 {
		t.StreamWindow = DefaultStreamWindow
	}
	setDur(&t.KeepaliveInterval, DefaultKeepaliveInterval)
	setDur(&t.KeepaliveTimeout, DefaultKeepaliveTimeout)
	setDur(&t.OpenTimeout, DefaultOpenTimeout)
	if t.MaxStreams == 0 {
		t.MaxStreams = DefaultMaxStreams
	}
	setDur(&t.WriteTimeout, DefaultWriteTimeout)
	if t.MaxBuffered == 0 {
		t.MaxBuffered = DefaultMaxBuffered
	}
	if t.MaxTunnelBuffered == 0 {
		t.MaxTunnelBuffered = DefaultMaxTunnelBuffered
	}
	if t.MaxTunnelsPerPeer == 0 {
		t.MaxTunnelsPerPeer = DefaultMaxTunnelsPerPeer
	}
	for i := range c.Servers {
		s := &c.Servers[i]
		s.TLS = s.TLS.inherit(c.TLS)
		setDur(&s.HandshakeTimeout, DefaultHandshakeTimeout)
		setDur(&s.HelloTimeout, DefaultHelloTimeout)
		setBool(&s.Mux, true)
		if s.MaxHandshakes == 0 {
			s.MaxHandshakes = DefaultMaxHandshakes
		}
		if s.MaxHandshakesPerAddress == 0 {
			s.MaxHandshakesPerAddress = DefaultMaxHandshakesPerAddress
		}
	}
	for i := range c.Clients {
		cl := &c.Clients[i]
		cl.TLS = cl.TLS.inherit(c.TLS)
		setDur(&cl.DialTimeout, DefaultDialTimeout)
		setDur(&cl.BackoffMin, DefaultBackoffMin)
		setDur(&cl.BackoffMax, DefaultBackoffMax)
		setBool(&cl.Mux, true)
		if cl.Tunnels == 0 {
			cl.Tunnels = DefaultTunnels
		}
		if cl.Strategy == "" {
			cl.Strategy = DefaultStrategy
		}
		if cl.Proxy != "" && cl.ProxyAuth == "" {
			cl.ProxyAuth = DefaultProxyAuth
		}
	}
	for i := range c.Forwards {
		setDur(&c.Forwards[i].TunnelWait, DefaultTunnelWait)
	}
	for i := range c.Services {
		setDur(&c.Services[i].DialTimeout, DefaultDialTimeout)
		if c.Services[i].TargetStrategy == "" {
			c.Services[i].TargetStrategy = DefaultTargetStrategy
		}
	}
	if c.ACME != nil {
		c.ACME.setDefaults()
	}
	if c.CA != nil {
		c.CA.setDefaults()
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
}

func setBool(b **bool, def bool) {
	if *b == nil {
		*b = &def
	}
}

func setDur(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

// inherit fills the keys t leaves empty from the agent's [tls] defaults.
func (t TLS) inherit(def TLS) TLS {
	if t.Cert == "" {
		t.Cert = def.Cert
	}
	if t.Key == "" {
		t.Key = def.Key
	}
	if t.CA == "" {
		t.CA = def.CA
	}
	if t.CRL == nil {
		t.CRL = def.CRL
	}
	if t.MinVersion == "" {
		t.MinVersion = def.MinVersion
	}
	if t.CRLStale == "" {
		t.CRLStale = def.CRLStale
	}
	if t.OCSP == "" {
		t.OCSP = def.OCSP
	}
	if t.ExpiryWarning == 0 {
		t.ExpiryWarning = def.ExpiryWarning
	}
	if t.ReloadInterval == 0 {
		t.ReloadInterval = def.ReloadInterval
	}
	if t.RenewBefore == 0 {
		t.RenewBefore = def.RenewBefore
	}
	return t
}

func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	resolve := func(t *TLS) {
		// A pkcs11: URI names a token object, not a file.
		if !hsm.IsURI(t.Cert) {
			abs(&t.Cert)
		}
		if !hsm.IsURI(t.Key) {
			abs(&t.Key)
		}
		abs(&t.CA)
		crl := make([]string, len(t.CRL))
		copy(crl, t.CRL)
		for i := range crl {
			abs(&crl[i])
		}
		if t.CRL != nil {
			t.CRL = crl
		}
	}
	resolve(&c.TLS)
	if c.ACME != nil {
		c.ACME.resolvePaths(dir)
	}
	if c.CA != nil {
		c.CA.resolvePaths(dir)
	}
	if c.Enroll != nil {
		c.Enroll.resolvePaths(dir)
	}
	for i := range c.Servers {
		resolve(&c.Servers[i].TLS)
	}
	for i := range c.Clients {
		resolve(&c.Clients[i].TLS)
		abs(&c.Clients[i].ProxyPasswordFile)
	}
	for i := range c.Forwards {
		resolveUnix(&c.Forwards[i].Listen, dir)
	}
	for i := range c.Services {
		resolveUnix(&c.Services[i].Target, dir)
		for j := range c.Services[i].Targets {
			resolveUnix(&c.Services[i].Targets[j], dir)
		}
	}
}

// TargetList is the service's targets: targets, or its one target.
func (s *Service) TargetList() []Address {
	if len(s.Targets) > 0 {
		return s.Targets
	}
	if s.Target == "" {
		return nil
	}
	return []Address{s.Target}
}
