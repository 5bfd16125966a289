package client

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/Azure/go-ntlmssp"
	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/proxy"

	"github.com/postern-tunnel/postern/config"
)

// maxConnectAnswer bounds the status line and headers a proxy may send in
// answer to one CONNECT (and the body of a refusal, which is discarded).
const maxConnectAnswer = 16 << 10

// Proxy is how a [[client]] reaches its servers through a proxy. The TLS
// handshake and the server-name check run end to end through the
// connection it opens: the proxy sees only the CONNECT target.
//
// A Proxy is immutable after NewProxy and safe for concurrent use. The
// password is read on each dial, so a rotated password file needs no
// reload.
type Proxy struct {
	fixed *url.URL // the configured http:// or socks5:// proxy; nil with env
	// env picks the proxy for a server from HTTPS_PROXY, ALL_PROXY and
	// NO_PROXY (nil result: dial directly); nil unless proxy = "env".
	env          func(*url.URL) (*url.URL, error)
	envName      string // the variable env's proxy came from, for messages
	ntlm         bool
	passwordFile string
	passwordEnv  string
	getenv       func(string) string
}

// NewProxy builds the proxy of a [[client]]; it returns nil, nil when
// the client dials directly. getenv reads the environment (os.Getenv
// when nil); with proxy = "env" the variables are read here, once.
func NewProxy(cc config.Client, getenv func(string) string) (*Proxy, error) {
	if cc.Proxy == "" {
		return nil, nil
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	p := &Proxy{ntlm: cc.ProxyAuth == "ntlm", passwordFile: cc.ProxyPasswordFile, passwordEnv: cc.ProxyPasswordEnv, getenv: getenv}
	if cc.Proxy != "env" {
		u, err := config.ParseProxyURL(cc.Proxy)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		p.fixed = u
		return p, nil
	}
	// As curl reads them: the lower-case name first; https_proxy before
	// all_proxy; no_proxy before NO_PROXY.
	var cfg httpproxy.Config
	for _, name := range []string{"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"} {
		if v := getenv(name); v != "" {
			cfg.HTTPSProxy, p.envName = v, name
			break
		}
	}
	cfg.NoProxy = getenv("no_proxy")
	if cfg.NoProxy == "" {
		cfg.NoProxy = getenv("NO_PROXY")
	}
	if cfg.HTTPSProxy != "" {
		u, err := parseEnvProxy(cfg.HTTPSProxy)
		if err != nil {
			return nil, fmt.Errorf("proxy = \"env\": %s: %w", p.envName, err)
		}
		cfg.HTTPSProxy = u.String()
	}
	p.env = cfg.ProxyFunc()
	return p, nil
}

// parseEnvProxy reads a proxy variable the way curl does: a URL without a
// scheme is an HTTP proxy; socks5h is socks5 (the proxy resolves names
// either way); a password may be inline, as the environment is not the
// config file.
func parseEnvProxy(v string) (*url.URL, error) {
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	if u.Scheme == "socks5h" {
		u.Scheme = "socks5"
	}
	if u.Scheme != "http" && u.Scheme != "socks5" {
		return nil, fmt.Errorf("%q: scheme %q is not one of http, socks5, socks5h", u.Redacted(), u.Scheme)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), config.DefaultEnvProxyPort)
	}
	return u, nil
}

// For returns the proxy that a dial to addr goes through, or nil when
// it goes directly (no proxy, or NO_PROXY names addr; loopback addresses
// are never proxied with proxy = "env").
func (p *Proxy) For(addr string) (*url.URL, error) {
	if p == nil {
		return nil, nil
	}
	if p.fixed != nil {
		return p.fixed, nil
	}
	return p.env(&url.URL{Scheme: "https", Host: addr})
}

// Describe names the hop to addr for people: "http://proxy:3128",
// "socks5://gw:1080", or "" for a direct dial. It never shows a password.
func (p *Proxy) Describe(addr string) string {
	u, err := p.For(addr)
	if err != nil || u == nil {
		return ""
	}
	d := *u
	if d.User != nil {
		d.User = url.User(d.User.Username())
	}
	if p.env != nil {
		return fmt.Sprintf("%s (from %s)", d.String(), p.envName)
	}
	return d.String()
}

// Dial returns a DialFunc that reaches addr through the proxy, using
// base to reach the proxy itself. The dial's context bounds the whole
// exchange with the proxy. Failures are *ProxyError.
func (p *Proxy) Dial(base DialFunc) DialFunc {
	if p == nil {
		return base
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		u, err := p.For(addr)
		if err != nil {
			return nil, &ProxyError{Proxy: p.envName, Msg: "is not a usable proxy URL", Err: err}
		}
		if u == nil {
			return base(ctx, network, addr)
		}
		if u.Scheme == "socks5" {
			return p.dialSOCKS(ctx, base, u, addr)
		}
		return p.dialConnect(ctx, base, u, addr)
	}
}

// ProxyError is a dial that failed at the proxy: it is unreachable,
// refused the request, or could not reach the server.
type ProxyError struct {
	Proxy string // host:port of the proxy
	Msg   string // what happened, read after "proxy HOST:PORT "
	Err   error  // the cause, if any
}

func (e *ProxyError) Error() string { return "proxy " + e.Proxy + " " + e.Msg }

func (e *ProxyError) Unwrap() error { return e.Err }

// credentials returns the user and password for u: the user from the URL,
// the password from the URL (only possible with proxy = "env"), else from
// proxy_password_file or proxy_password_env.
func (p *Proxy) credentials(u *url.URL) (user, password string, err error) {
	if u.User == nil || u.User.Username() == "" {
		return "", "", nil
	}
	user = u.User.Username()
	if pw, ok := u.User.Password(); ok {
		return user, pw, nil
	}
	switch {
	case p.passwordFile != "":
		data, err := os.ReadFile(p.passwordFile)
		if err != nil {
			return "", "", fmt.Errorf("proxy_password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		return user, strings.TrimSuffix(line, "\r"), nil
	case p.passwordEnv != "":
		pw := p.getenv(p.passwordEnv)
		if pw == "" {
			return "", "", fmt.Errorf("proxy_password_env: %s is not set (or empty) in the agent's environment", p.passwordEnv)
		}
		return user, pw, nil
	}
	return "", "", fmt.Errorf("proxy names user %q but no password: set proxy_password_file or proxy_password_env", user)
}

// passwordHint says where the password came from, for a refusal.
func (p *Proxy) passwordHint(u *url.URL) string {
	if u.User == nil || u.User.Username() == "" {
		return fmt.Sprintf("the proxy wants a user name and password: write proxy = %q and set proxy_password_file", withUserPlaceholder(u))
	}
	if _, ok := u.User.Password(); ok {
		return fmt.Sprintf("check the user %q and the password in %s", u.User.Username(), p.envName)
	}
	if p.passwordFile != "" {
		return fmt.Sprintf("check the user %q and proxy_password_file %s", u.User.Username(), p.passwordFile)
	}
	return fmt.Sprintf("check the user %q and proxy_password_env %s", u.User.Username(), p.passwordEnv)
}

func withUserPlaceholder(u *url.URL) string {
	return u.Scheme + "://USER@" + u.Host
}

// unreachable names a failure to open the connection to the proxy.
func unreachable(u *url.URL, err error) error {
	return &ProxyError{Proxy: u.Host, Msg: "unreachable: " + UnwrapOp(err).Error(), Err: err}
}

// dialConnect opens a tunnel to addr with HTTP CONNECT.
func (p *Proxy) dialConnect(ctx context.Context, base DialFunc, u *url.URL, addr string) (net.Conn, error) {
	user, password, err := p.credentials(u)
	if err != nil {
		return nil, &ProxyError{Proxy: u.Host, Msg: "not tried: " + err.Error(), Err: err}
	}
	conn, err := base(ctx, "tcp", u.Host)
	if err != nil {
		return nil, unreachable(u, err)
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	rest, err := p.connect(conn, u, addr, user, password)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		var pe *ProxyError
		if errors.As(err, &pe) {
			return nil, err
		}
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &ProxyError{Proxy: u.Host, Msg: fmt.Sprintf("did not answer CONNECT %s within the dial timeout", addr), Err: err}
		}
		return nil, &ProxyError{Proxy: u.Host, Msg: fmt.Sprintf("CONNECT %s: %v", addr, UnwrapOp(err)), Err: err}
	}
	conn.SetDeadline(time.Time{})
	if len(rest) > 0 {
		return &prefixConn{Conn: conn, prefix: rest}, nil
	}
	return conn, nil
}

// connect runs the CONNECT exchange on conn and returns the bytes the
// proxy sent after its answer (normally none: TLS clients speak first).
func (p *Proxy) connect(conn net.Conn, u *url.URL, addr, user, password string) ([]byte, error) {
	ar := newAnswerReader(conn)
	req := connectRequest(addr)
	if user != "" && !p.ntlm {
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
	}
	if user != "" && p.ntlm {
		if err := p.ntlmHandshake(conn, ar, u, addr, user, password); err != nil {
			return nil, err
		}
		return ar.rest(), nil
	}
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	if _, err := ar.read(req); err != nil {
		return nil, p.refusal(u, addr, err)
	}
	return ar.rest(), nil
}

// ntlmHandshake authenticates on conn with NTLM: negotiate, challenge,
// authenticate, all on the one connection, ending with the proxy's
// answer to the authenticated CONNECT.
func (p *Proxy) ntlmHandshake(conn net.Conn, ar *answerReader, u *url.URL, addr, user, password string) error {
	negotiate, err := ntlmssp.NewNegotiateMessage("", "")
	if err != nil {
		return err
	}
	req := connectRequest(addr)
	req.Header.Set("Proxy-Authorization", "NTLM "+base64.StdEncoding.EncodeToString(negotiate))
	if err := req.Write(conn); err != nil {
		return err
	}
	resp, err := ar.read(req)
	if err == nil {
		return nil // the proxy let us through without authenticating
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusProxyAuthRequired {
		return p.refusal(u, addr, err)
	}
	var challenge []byte
	for _, h := range resp.Header.Values("Proxy-Authenticate") {
		if v, ok := strings.CutPrefix(h, "NTLM "); ok {
			challenge, _ = base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		}
	}
	if challenge == nil {
		return &ProxyError{Proxy: u.Host, Msg: fmt.Sprintf("answered %s without an NTLM challenge (it offers %s): set proxy_auth = \"basic\" if it takes a password in plain",
			se.Status, offered(resp.Header.Values("Proxy-Authenticate"))), Err: err}
	}
	if resp.Close {
		return &ProxyError{Proxy: u.Host, Msg: "closed the connection in the middle of NTLM authentication", Err: err}
	}
	// user may be DOMAIN\\name or name@domain; the library splits it.
	auth, err := ntlmssp.NewAuthenticateMessage(challenge, user, password, nil)
	if err != nil {
		return &ProxyError{Proxy: u.Host, Msg: "sent an NTLM challenge that cannot be answered: " + err.Error(), Err: err}
	}
	req = connectRequest(addr)
	req.Header.Set("Proxy-Authorization", "NTLM "+base64.StdEncoding.EncodeToString(auth))
	if err := req.Write(conn); err != nil {
		return err
	}
	if _, err := ar.read(req); err != nil {
		return p.refusal(u, addr, err)
	}
	return nil
}

// offered lists the authentication schemes a proxy offers.
func offered(challenges []string) string {
	var schemes []string
	for _, c := range challenges {
		scheme, _, _ := strings.Cut(c, " ")
		schemes = append(schemes, printable(scheme))
	}
	if len(schemes) == 0 {
		return "none"
	}
	return strings.Join(schemes, ", ")
}

// refusal turns the proxy's non-2xx answer into a message that says
// what to do.
func (p *Proxy) refusal(u *url.URL, addr string, err error) error {
	var se *StatusError
	if !errors.As(err, &se) {
		return err
	}
	msg := "answered " + se.Status + " to CONNECT " + addr
	switch {
	case se.Code == http.StatusProxyAuthRequired:
		msg = "answered " + se.Status + ": " + p.passwordHint(u)
	case se.Code == http.StatusForbidden || se.Code == http.StatusMethodNotAllowed:
		_, port, _ := net.SplitHostPort(addr)
		msg += fmt.Sprintf(": the proxy does not allow this destination; ask its administrators to allow CONNECT to port %s", port)
	case se.Code >= 500:
		msg += ": the proxy could not reach the server"
	}
	return &ProxyError{Proxy: u.Host, Msg: msg, Err: err}
}

func connectRequest(addr string) *http.Request {
	return &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{"User-Agent": {"postern"}},
	}
}

// StatusError is a proxy's answer other than 2xx to a CONNECT.
type StatusError struct {
	Code   int
	Status string // "407 Proxy Authentication Required", made printable
}

func (e *StatusError) Error() string { return "answered " + e.Status }

// answerReader reads a proxy's answers on one connection, each bounded to
// maxConnectAnswer bytes.
type answerReader struct {
	lr io.LimitedReader
	br *bufio.Reader
}

func newAnswerReader(r io.Reader) *answerReader {
	a := &answerReader{lr: io.LimitedReader{R: r}}
	a.br = bufio.NewReaderSize(&a.lr, 4096)
	return a
}

// read reads one answer to req. A 2xx answer returns a nil error and its
// body is left unread (it is the tunnel). Any other answer returns a
// *StatusError with the response, its body read and discarded within the
// bound, so the connection can carry another request.
func (a *answerReader) read(req *http.Request) (*http.Response, error) {
	a.lr.N = maxConnectAnswer
	resp, err := http.ReadResponse(a.br, req)
	if err != nil {
		if a.lr.N <= 0 {
			return nil, fmt.Errorf("answer to CONNECT longer than %d bytes", maxConnectAnswer)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("closed the connection without answering CONNECT")
		}
		var ne net.Error
		if errors.As(err, &ne) {
			return nil, err
		}
		return nil, fmt.Errorf("answered something other than HTTP: %v", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	if resp.Body != nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, &StatusError{Code: resp.StatusCode, Status: printable(resp.Status)}
}

// rest returns what the proxy sent after its last answer, and makes the
// bound apply no more.
func (a *answerReader) rest() []byte {
	n := a.br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := a.br.Peek(n)
	return append([]byte(nil), b...)
}

// printable quotes s if it holds anything but printable characters and
// caps its length: it comes from the network and goes into logs.
func printable(s string) string {
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// prefixConn is a connection whose first reads return prefix.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// dialSOCKS opens a connection to addr through a SOCKS5 proxy. The proxy
// resolves names, so a server name needs no DNS on this side.
func (p *Proxy) dialSOCKS(ctx context.Context, base DialFunc, u *url.URL, addr string) (net.Conn, error) {
	user, password, err := p.credentials(u)
	if err != nil {
		return nil, &ProxyError{Proxy: u.Host, Msg: "not tried: " + err.Error(), Err: err}
	}
	var auth *proxy.Auth
	if user != "" {
		auth = &proxy.Auth{User: user, Password: password}
	}
	d, err := proxy.SOCKS5("tcp", u.Host, auth, forwardDialer(base))
	if err != nil {
		return nil, &ProxyError{Proxy: u.Host, Msg: err.Error(), Err: err}
	}
	conn, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
	if err == nil {
		return conn, nil
	}
	var down *proxyDown
	if errors.As(err, &down) {
		return nil, unreachable(u, down.err)
	}
	why := UnwrapOp(err).Error()
	switch {
	case why == "username/password authentication failed":
		why = "refused the user name and password: " + p.passwordHint(u)
	case why == "no acceptable authentication methods" && auth == nil:
		why = "wants a user name and password: write proxy = " + strconv.Quote(withUserPlaceholder(u)) + " and set proxy_password_file"
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		why = fmt.Sprintf("did not answer the SOCKS5 request for %s within the dial timeout", addr)
	default:
		why = fmt.Sprintf("answered %q to the SOCKS5 request for %s", strings.TrimPrefix(why, "unknown error "), addr)
	}
	return nil, &ProxyError{Proxy: u.Host, Msg: why, Err: err}
}

// forwardDialer reaches the SOCKS proxy with base, marking its failures
// as the proxy being unreachable.
type forwardDialer DialFunc

func (f forwardDialer) Dial(network, addr string) (net.Conn, error) {
	return f.DialContext(context.Background(), network, addr)
}

func (f forwardDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := f(ctx, network, addr)
	if err != nil {
		return nil, &proxyDown{err}
	}
	return c, nil
}

type proxyDown struct{ err error }

func (e *proxyDown) Error() string { return e.err.Error() }
func (e *proxyDown) Unwrap() error { return e.err }
