package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// needIPv6 fails the test under CI=true, and skips it elsewhere, when the
// machine has no IPv6 loopback.
func needIPv6(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err == nil {
		ln.Close()
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no IPv6 loopback, which CI needs for this test: %v", err)
	}
	t.Skipf("skipped: this machine has no IPv6 loopback (net.Listen tcp6 [::1]:0: %v)", err)
}

// listen6 listens on [::1] at an ephemeral port until the test ends.
func listen6(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// checkedEcho sends size random bytes through addr, half-closes, and
// checks that what comes back has the same SHA-256.
func checkedEcho(t *testing.T, network, addr string, size int) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(size)})
	rng.Read(data)
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		sent <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("%s %s: read after %d bytes: %v", network, addr, n, err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("%s %s: send: %v", network, addr, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("%s %s: %d bytes back, SHA-256 differs from the %d sent", network, addr, n, size)
	}
}

// TestIPv6 runs every listener and dial on the IPv6 loopback: the hub's
// server on [::1]:0, a site that dials it by its bracketed address (the
// server name to verify, ::1, comes from that address), forwards on
// [::1]:0, service targets on [::1], a reverse forward, and the admin
// endpoint. The open
// request carries the app's IPv6 address to the hub, which puts it in the
// target's PROXY header and its log.
func TestIPv6(t *testing.T) {
	needIPv6(t)
	dir := t.TempDir()
	ca := testca.New(t, "IPv6 CA")
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"::1"}}).Write(t, dir, "hub", ca)
	siteFiles := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "site", ca)

	echo := listen6(t)
	testnet.Serve(t, echo, testnet.Echo)
	siteEcho := listen6(t)
	testnet.Serve(t, siteEcho, testnet.Echo)
	ppRaw := listen6(t)
	pl := &proxyproto.Listener{Listener: ppRaw}
	headers := make(chan *proxyproto.Header, 1)
	go func() {
		c, err := pl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		headers <- c.(*proxyproto.Conn).ProxyHeader()
		io.Copy(c, c)
	}()

	tlsTOML := func(f testca.Files) string {
		return fmt.Sprintf("[tls]\ncert = %q\nkey = %q\nca = %q\n", f.Cert, f.Key, f.CA)
	}
	hub := start(t, dir, "hub", `shutdown_timeout = "5s"
[tunnel]
open_timeout = "60s"
`+tlsTOML(hubFiles)+`[[server]]
listen = "[::1]:0"
[[forward]]
listen = "[::1]:0"
service = "site-echo"
via = "dns:site-a.test"
tunnel_wait = "10s"
`+serviceTOML("echo", echo.Addr().String(), "dns:site-a.test")+
		serviceTOML("pp", ppRaw.Addr().String(), "dns:site-a.test")+"proxy_protocol = \"v2\"\n")
	hubAddr := hub.ServerAddrs()[0].String()
	if !strings.HasPrefix(hubAddr, "[::1]:") {
		t.Fatalf("hub listens on %s, want [::1]:PORT", hubAddr)
	}
	site := start(t, dir, "site", fmt.Sprintf(`shutdown_timeout = "5s"
[tunnel]
open_timeout = "60s"
%s[[client]]
name = "hub"
servers = [%q]
backoff_min = "50ms"
backoff_max = "500ms"
[admin]
listen = "[::1]:0"
[[forward]]
listen = "[::1]:0"
service = "echo"
via = "hub"
[[forward]]
listen = "[::1]:0"
service = "pp"
via = "hub"
`, tlsTOML(siteFiles), hubAddr)+serviceTOML("site-echo", siteEcho.Addr().String(), "dns:hub.test"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)
	waitTunnels(t, site, 1) // logged when dialed; /readyz counts it once published

	fwds := site.ForwardAddrs()
	t.Run("admin", func(t *testing.T) {
		if code, body := get(t, "http://"+site.AdminAddr().String()+"/readyz"); code != 200 {
			t.Fatalf("/readyz on %s: %d %q", site.AdminAddr(), code, body)
		}
	})
	t.Run("forward", func(t *testing.T) { checkedEcho(t, "tcp", fwds[0].String(), 4<<20) })
	t.Run("reverse forward", func(t *testing.T) { checkedEcho(t, "tcp", hub.ForwardAddrs()[0].String(), 4<<20) })
	t.Run("PROXY header", func(t *testing.T) {
		c := testnet.Dial(t, fwds[1].String())
		c.Write([]byte("hello\n"))
		got := make([]byte, 6)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello\n" {
			t.Fatalf("echo through a PROXY target: %q, %v", got, err)
		}
		var h *proxyproto.Header
		select {
		case h = <-headers:
		case <-time.After(30 * time.Second):
			t.Fatal("the target got no connection")
		}
		if h == nil || h.TransportProtocol != proxyproto.TCPv6 || h.Command != proxyproto.PROXY {
			t.Fatalf("PROXY header %+v, want PROXY TCPv6", h)
		}
		if h.SourceAddr.String() != c.LocalAddr().String() || h.DestinationAddr.String() != c.RemoteAddr().String() {
			t.Fatalf("PROXY header says %s → %s, want %s → %s", h.SourceAddr, h.DestinationAddr, c.LocalAddr(), c.RemoteAddr())
		}
		hub.log.WaitFor(t, 10*time.Second, "stream connected to its target", "client="+c.LocalAddr().String(), "service=pp")
	})
}

// TestIPv6ByName: a client whose server is a name that resolves to ::1
// connects, and verifies that name (not an address) in the hub's
// certificate. The name resolves through the agent's dial function, as
// /etc/hosts on test machines need not map a name to ::1.
func TestIPv6ByName(t *testing.T) {
	needIPv6(t)
	echo := listen6(t)
	testnet.Serve(t, echo, testnet.Echo)
	dir := t.TempDir()
	ca := testca.New(t, "IPv6 CA")
	// No IP in the certificate: only the name can verify.
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub6.test"}}).Write(t, dir, "hub", ca)
	siteFiles := ca.Issue(t, testca.Options{CN: "site-a", DNS: []string{"site-a.test"}}).Write(t, dir, "site", ca)
	hub := start(t, dir, "hub", fmt.Sprintf(`shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
[[server]]
listen = "[::1]:0"
`, hubFiles.Cert, hubFiles.Key, hubFiles.CA)+serviceTOML("echo", echo.Addr().String(), "cn:site-a"))
	_, port, _ := net.SplitHostPort(hub.ServerAddrs()[0].String())
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		if host == "hub6.test" {
			addr = net.JoinHostPort("::1", port)
		}
		return d.DialContext(ctx, network, addr)
	}
	site := startWith(t, dir, "site", fmt.Sprintf(`shutdown_timeout = "5s"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = ["hub6.test:%s"]
backoff_min = "50ms"
[[forward]]
listen = "[::1]:0"
service = "echo"
via = "hub"
`, siteFiles.Cert, siteFiles.Key, siteFiles.CA, port), Options{Dial: dial})
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr=hub6.test:"+port)
	checkedEcho(t, "tcp", site.ForwardAddrs()[0].String(), 1<<20)
	hub.log.WaitFor(t, 10*time.Second, "tunnel accepted", "peer_addr=[::1]:")
}

// TestIPv6Zone: a server address with a zone ("[::1%lo]:PORT") is dialed
// through that interface and verified against the certificate's IP SAN
// ::1: the zone is in no certificate.
func TestIPv6Zone(t *testing.T) {
	needIPv6(t)
	lo := loopbackName(t)
	dir := t.TempDir()
	ca := testca.New(t, "IPv6 CA")
	hubFiles := ca.Issue(t, testca.Options{CN: "hub", IPs: []string{"::1"}}).Write(t, dir, "hub", ca)
	siteFiles := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	tlsTOML := func(f testca.Files) string {
		return fmt.Sprintf("shutdown_timeout = \"5s\"\n[tls]\ncert = %q\nkey = %q\nca = %q\n", f.Cert, f.Key, f.CA)
	}
	hub := start(t, dir, "hub", tlsTOML(hubFiles)+"[[server]]\nlisten = \"[::1]:0\"\n")
	_, port, _ := net.SplitHostPort(hub.ServerAddrs()[0].String())
	addr := net.JoinHostPort("::1%"+lo, port)
	site := start(t, dir, "site", tlsTOML(siteFiles)+fmt.Sprintf("[[client]]\nname = \"hub\"\nservers = [%q]\nbackoff_min = \"50ms\"\n", addr))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+addr)
}

// loopbackName is the name of the loopback interface ("lo" on Linux).
func loopbackName(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Name
		}
	}
	t.Fatal("no loopback interface")
	return ""
}
