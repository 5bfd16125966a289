package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// fakeProxy answers each CONNECT with answer and, after a 2xx, relays to
// the address in route (or the CONNECT target itself). It records the
// targets and the Proxy-Authorization headers it was sent.
type fakeProxy struct {
	addr   string
	answer string
	route  map[string]string

	mu      sync.Mutex
	targets []string
	auth    []string
}

func startFakeProxy(t *testing.T, answer string, route map[string]string) *fakeProxy {
	ln := testnet.Listen(t)
	fp := &fakeProxy{addr: ln.Addr().String(), answer: answer, route: route}
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fp.mu.Lock()
		fp.targets = append(fp.targets, req.Host)
		fp.auth = append(fp.auth, req.Header.Get("Proxy-Authorization"))
		fp.mu.Unlock()
		io.WriteString(c, fp.answer)
		if !strings.HasPrefix(fp.answer, "HTTP/1.1 2") {
			return
		}
		dst := req.Host
		if r, ok := fp.route[dst]; ok {
			dst = r
		}
		up, err := net.Dial("tcp", dst)
		if err != nil {
			return
		}
		defer up.Close()
		go func() {
			io.Copy(up, br)
			up.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(c, up)
	})
	return fp
}

func (fp *fakeProxy) seen() ([]string, []string) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([]string(nil), fp.targets...), append([]string(nil), fp.auth...)
}

func echoServer(t *testing.T) string {
	ln := testnet.Listen(t)
	testnet.Serve(t, ln, testnet.Echo)
	return ln.Addr().String()
}

// roundTrip dials addr with dial and checks that bytes come back.
func roundTrip(t *testing.T, dial DialFunc, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping through the proxy"); err != nil {
		return err
	}
	buf := make([]byte, len("ping through the proxy"))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping through the proxy" {
		t.Fatalf("echo = %q", buf)
	}
	return nil
}

var direct DialFunc = (&net.Dialer{}).DialContext

func newProxy(t *testing.T, cc config.Client, env map[string]string) *Proxy {
	t.Helper()
	if cc.ProxyAuth == "" {
		cc.ProxyAuth = "basic"
	}
	p, err := NewProxy(cc, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConnectThroughFakeProxy(t *testing.T) {
	echo := echoServer(t)
	fp := startFakeProxy(t, "HTTP/1.1 200 Connection established\r\n\r\n", nil)
	pass := filepath.Join(t.TempDir(), "proxy.pass")
	os.WriteFile(pass, []byte("s3cret\r\nignored second line\n"), 0o600)
	p := newProxy(t, config.Client{Proxy: "http://svc@" + fp.addr, ProxyPasswordFile: pass}, nil)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatal(err)
	}
	targets, auth := fp.seen()
	if len(targets) != 1 || targets[0] != echo {
		t.Errorf("CONNECT targets = %q, want [%s]", targets, echo)
	}
	if want := "Basic c3ZjOnMzY3JldA=="; auth[0] != want { // svc:s3cret
		t.Errorf("Proxy-Authorization = %q, want %q", auth[0], want)
	}
}

func TestConnectRefusals(t *testing.T) {
	pass := filepath.Join(t.TempDir(), "proxy.pass")
	os.WriteFile(pass, []byte("wrong\n"), 0o600)
	tests := []struct {
		name, answer, user, want string
	}{
		{"407 without credentials", "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n", "",
			`proxy PROXY answered 407 Proxy Authentication Required: the proxy wants a user name and password: write proxy = "http://USER@PROXY" and set proxy_password_file`},
		{"407 with credentials", "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", "svc",
			`proxy PROXY answered 407 Proxy Authentication Required: check the user "svc" and proxy_password_file ` + pass},
		{"403", "HTTP/1.1 403 Forbidden\r\n\r\n", "",
			`proxy PROXY answered 403 Forbidden to CONNECT 10.9.9.9:7443: the proxy does not allow this destination; ask its administrators to allow CONNECT to port 7443`},
		{"503", "HTTP/1.0 503 Service Unavailable\r\n\r\n", "",
			`proxy PROXY answered 503 Service Unavailable to CONNECT 10.9.9.9:7443: the proxy could not reach the server`},
		{"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", "",
			`proxy PROXY CONNECT 10.9.9.9:7443: answered something other than HTTP: malformed HTTP response "SSH-2.0-OpenSSH_9.2"`},
		{"control characters in the status", "HTTP/1.1 418 I'm a \x1b[31mteapot\r\n\r\n", "",
			`proxy PROXY answered "418 I'm a \x1b[31mteapot" to CONNECT 10.9.9.9:7443`},
		{"endless headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("a", 100)+"\r\n", 200), "",
			`proxy PROXY CONNECT 10.9.9.9:7443: answer to CONNECT longer than 16384 bytes`},
		{"closed without answer", "", "",
			`proxy PROXY CONNECT 10.9.9.9:7443: closed the connection without answering CONNECT`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := startFakeProxy(t, tt.answer, nil)
			cc := config.Client{Proxy: "http://" + fp.addr}
			if tt.user != "" {
				cc = config.Client{Proxy: "http://" + tt.user + "@" + fp.addr, ProxyPasswordFile: pass}
			}
			err := roundTrip(t, newProxy(t, cc, nil).Dial(direct), "10.9.9.9:7443")
			want := strings.ReplaceAll(tt.want, "PROXY", fp.addr)
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n got  %v\n want %s", err, want)
			}
			if _, ok := errors.AsType[*ProxyError](err); !ok {
				t.Errorf("%T is not a *ProxyError", err)
			}
		})
	}
}

func TestConnectSilentProxyTimesOut(t *testing.T) {
	ln := testnet.Listen(t)
	release := make(chan struct{})
	testnet.Serve(t, ln, func(c *net.TCPConn) { <-release })
	defer close(release)
	p := newProxy(t, config.Client{Proxy: "http://" + ln.Addr().String()}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Dial(direct)(ctx, "tcp", "10.9.9.9:7443")
	want := "proxy " + ln.Addr().String() + " did not answer CONNECT 10.9.9.9:7443 within the dial timeout"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got  %v\n want %s", err, want)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s: the dial timeout did not bound the exchange", d)
	}
}

func TestProxyUnreachable(t *testing.T) {
	addr := testnet.RefusedAddr(t)
	for _, scheme := range []string{"http", "socks5"} {
		p := newProxy(t, config.Client{Proxy: scheme + "://" + addr}, nil)
		err := roundTrip(t, p.Dial(direct), "10.9.9.9:7443")
		want := "proxy " + addr + " unreachable: connection refused"
		if err == nil || err.Error() != want {
			t.Errorf("%s: error:\n got  %v\n want %s", scheme, err, want)
		}
		// And through the client's own wrapping, the message survives.
		if got := UnwrapOp(err); got != err {
			t.Errorf("unwrapOp dropped the proxy from %v: %v", err, got)
		}
	}
}

func TestProxyFromEnv(t *testing.T) {
	echo := echoServer(t)
	fp := startFakeProxy(t, "HTTP/1.1 200 OK\r\n\r\n", map[string]string{"hub.example.com:7443": echo, "hub.example.net:7443": echo})
	var mu sync.Mutex
	var directDials []string
	base := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != fp.addr {
			mu.Lock()
			directDials = append(directDials, addr)
			mu.Unlock()
			addr = echo // every direct dial lands on the echo server
		}
		return direct(ctx, network, addr)
	}
	env := map[string]string{
		"HTTPS_PROXY": "http://" + fp.addr,
		"https_proxy": "", // empty: the upper-case one counts
		"NO_PROXY":    ".internal, 10.0.0.0/8,hub.example.net",
		"ALL_PROXY":   "socks5://127.0.0.1:1", // not used: HTTPS_PROXY wins
	}
	p := newProxy(t, config.Client{Proxy: "env"}, env)
	dial := p.Dial(base)
	for _, tt := range []struct {
		addr    string
		proxied bool
	}{
		{"hub.example.com:7443", true},
		{"db.internal:5432", false},     // NO_PROXY domain suffix
		{"10.1.2.3:7443", false},        // NO_PROXY CIDR
		{"hub.example.net:7443", false}, // NO_PROXY host
		{"127.0.0.1:7443", false},       // loopback is never proxied
		{"sub.hub.example.net:7443", false},
	} {
		mu.Lock()
		directDials = nil
		mu.Unlock()
		before, _ := fp.seen()
		if err := roundTrip(t, dial, tt.addr); err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		after, _ := fp.seen()
		viaProxy := len(after) > len(before) && after[len(after)-1] == tt.addr
		mu.Lock()
		wentDirect := len(directDials) == 1 && directDials[0] == tt.addr
		mu.Unlock()
		if viaProxy != tt.proxied || wentDirect == tt.proxied {
			t.Errorf("%s: via proxy %v, direct %v; want proxied = %v", tt.addr, viaProxy, wentDirect, tt.proxied)
		}
		if d := p.Describe(tt.addr); (d != "") != tt.proxied {
			t.Errorf("Describe(%s) = %q", tt.addr, d)
		}
	}
	if d, want := p.Describe("hub.example.com:7443"), "http://"+fp.addr+" (from HTTPS_PROXY)"; d != want {
		t.Errorf("Describe = %q, want %q", d, want)
	}
}

func TestProxyEnvPrecedence(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string // Describe of a proxied address, "" for direct
	}{
		{map[string]string{"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"}, "http://a:1 (from https_proxy)"},
		{map[string]string{"ALL_PROXY": "socks5h://gw:1080"}, "socks5://gw:1080 (from ALL_PROXY)"},
		{map[string]string{"all_proxy": "proxy.corp:8080"}, "http://proxy.corp:8080 (from all_proxy)"},
		{map[string]string{"all_proxy": "socks5://gw"}, "socks5://gw:1080 (from all_proxy)"},               // curl's default port
		{map[string]string{"HTTPS_PROXY": "http://bob:pw@p:3128"}, "http://bob@p:3128 (from HTTPS_PROXY)"}, // password never shown
		{map[string]string{"HTTP_PROXY": "http://only-http:3128"}, ""},                                     // not for TLS, as in curl
		{map[string]string{"HTTPS_PROXY": "http://p:3128", "no_proxy": "*"}, ""},
		{map[string]string{"HTTPS_PROXY": "http://p:3128", "no_proxy": "other", "NO_PROXY": "*"}, "http://p:3128 (from HTTPS_PROXY)"},
	} {
		p := newProxy(t, config.Client{Proxy: "env"}, tt.env)
		if got := p.Describe("hub.example.com:7443"); got != tt.want {
			t.Errorf("%v: Describe = %q, want %q", tt.env, got, tt.want)
		}
	}
	_, err := NewProxy(config.Client{Proxy: "env"}, func(k string) string {
		return map[string]string{"HTTPS_PROXY": "https://p:3128"}[k]
	})
	if want := `proxy = "env": HTTPS_PROXY: "https://p:3128": scheme "https" is not one of http, socks5, socks5h`; err == nil || err.Error() != want {
		t.Errorf("error:\n got  %v\n want %s", err, want)
	}
}

func TestProxyPasswordSources(t *testing.T) {
	fp := startFakeProxy(t, "HTTP/1.1 200 OK\r\n\r\n", nil)
	echo := echoServer(t)
	env := map[string]string{"CORP_PROXY_PASS": "from-env"}
	p := newProxy(t, config.Client{Proxy: "http://svc@" + fp.addr, ProxyPasswordEnv: "CORP_PROXY_PASS"}, env)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatal(err)
	}
	if _, auth := fp.seen(); auth[0] != "Basic c3ZjOmZyb20tZW52" { // svc:from-env
		t.Errorf("Proxy-Authorization = %q", auth[0])
	}
	p = newProxy(t, config.Client{Proxy: "http://svc@" + fp.addr, ProxyPasswordEnv: "UNSET_VAR"}, env)
	err := roundTrip(t, p.Dial(direct), echo)
	want := "proxy " + fp.addr + " not tried: proxy_password_env: UNSET_VAR is not set (or empty) in the agent's environment"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got  %v\n want %s", err, want)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	p = newProxy(t, config.Client{Proxy: "http://svc@" + fp.addr, ProxyPasswordFile: missing}, env)
	err = roundTrip(t, p.Dial(direct), echo)
	want = "proxy " + fp.addr + " not tried: proxy_password_file: open " + missing + ": no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got  %v\n want %s", err, want)
	}
}

// statusOf reads the status code of an HTTP status line on its own, the
// way a person would: "HTTP/1.1 200 OK" → 200.
func statusOf(data []byte) (int, bool) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	_, status, ok := strings.Cut(strings.TrimSuffix(string(line), "\r"), " ")
	if !ok {
		return 0, false
	}
	code, _, _ := strings.Cut(strings.TrimLeft(status, " "), " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 {
		return 0, false
	}
	return n, true
}

// FuzzConnectAnswer checks what the CONNECT answer parser accepts: only a
// 2xx status (never anything else), a refusal always names its status,
// the bytes after the answer are handed on, and nothing past the bound
// is read.
func FuzzConnectAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n\x16\x03\x03",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 403 Forbidden\r\n\r\n",
		"HTTP/1.1 299 x\r\n\r\n",
		"HTTP/1.1 2000 x\r\n\r\n",
		"HTTP/1.1  204\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"SSH-2.0-OpenSSH\r\n",
		"HTTP/1.1 200\n\n",
	} {
		f.Add([]byte(s))
	}
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:3128"}
	p := &Proxy{passwordFile: "/etc/postern/proxy.pass"}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		ar := newAnswerReader(r)
		resp, err := ar.read(connectRequest("10.0.0.1:7443"))
		if r.n > maxConnectAnswer {
			t.Fatalf("read %d bytes, past the bound of %d", r.n, maxConnectAnswer)
		}
		code, ok := statusOf(data)
		if err == nil {
			if resp.StatusCode < 200 || resp.StatusCode > 299 || !ok || code != resp.StatusCode {
				t.Fatalf("accepted status %d (first line says %d, %v): %q", resp.StatusCode, code, ok, data)
			}
			if rest := ar.rest(); !bytes.HasSuffix(data[:r.n], rest) {
				t.Fatalf("rest %q is not what followed the answer in %q", rest, data)
			}
			return
		}
		if se, isStatus := errors.AsType[*StatusError](err); isStatus {
			if se.Code >= 200 && se.Code <= 299 {
				t.Fatalf("refused a 2xx: %v", err)
			}
			if ok && code != se.Code {
				t.Fatalf("status %d, first line says %d: %q", se.Code, code, data)
			}
			msg := p.refusal(u, "10.0.0.1:7443", err).Error()
			if !strings.HasPrefix(msg, "proxy 127.0.0.1:3128 answered ") || !strings.Contains(msg, strconv.Itoa(se.Code)) {
				t.Fatalf("message %q does not name the proxy and status %d", msg, se.Code)
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

func writePassword(t *testing.T, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.pass")
	if err := os.WriteFile(path, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
