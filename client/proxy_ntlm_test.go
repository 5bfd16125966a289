package client

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// ntlmChallenge builds a well-formed NTLM CHALLENGE message (MS-NLMP
// 2.2.1.2) for domain, with the target information NTLMv2 needs.
func ntlmChallenge(domain string) []byte {
	utf := func(s string) []byte {
		var b []byte
		for _, r := range utf16.Encode([]rune(s)) {
			b = binary.LittleEndian.AppendUint16(b, r)
		}
		return b
	}
	name := utf(domain)
	var info []byte
	info = binary.LittleEndian.AppendUint16(info, 2) // MsvAvNbDomainName
	info = binary.LittleEndian.AppendUint16(info, uint16(len(name)))
	info = append(info, name...)
	info = append(info, 0, 0, 0, 0) // MsvAvEOL
	const header = 48
	m := []byte("NTLMSSP\x00")
	m = binary.LittleEndian.AppendUint32(m, 2)
	m = binary.LittleEndian.AppendUint16(m, uint16(len(name))) // target name
	m = binary.LittleEndian.AppendUint16(m, uint16(len(name)))
	m = binary.LittleEndian.AppendUint32(m, header)
	m = binary.LittleEndian.AppendUint32(m, 0x00880201|0x00000004) // unicode, request target, NTLM, extended security, target info
	m = append(m, []byte("8bytes!!")...)                           // server challenge
	m = append(m, make([]byte, 8)...)                              // reserved
	m = binary.LittleEndian.AppendUint16(m, uint16(len(info)))
	m = binary.LittleEndian.AppendUint16(m, uint16(len(info)))
	m = binary.LittleEndian.AppendUint32(m, uint32(header+len(name)))
	m = append(m, name...)
	return append(m, info...)
}

// TestConnectNTLM runs the three NTLM messages on one connection against
// a fake proxy: negotiate, the proxy's challenge in a 407 (with a body to
// skip), then authenticate naming the user and domain. A real Windows
// proxy's password check cannot run here; see the README.
func TestConnectNTLM(t *testing.T) {
	echo := echoServer(t)
	ln := testnet.Listen(t)
	got := make(chan []string, 1)
	testnet.Serve(t, ln, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		var seen []string
		msg := func(req *http.Request) []byte {
			v, _ := strings.CutPrefix(req.Header.Get("Proxy-Authorization"), "NTLM ")
			b, _ := base64.StdEncoding.DecodeString(v)
			return b
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if m := msg(req); bytes.HasPrefix(m, []byte("NTLMSSP\x00\x01\x00\x00\x00")) {
			seen = append(seen, "negotiate")
		}
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM "+
			base64.StdEncoding.EncodeToString(ntlmChallenge("CORP"))+"\r\nContent-Length: 5\r\n\r\ndeny.")
		req, err = http.ReadRequest(br) // the same connection
		if err != nil {
			got <- seen
			return
		}
		m := msg(req)
		utf := func(s string) []byte {
			var b []byte
			for _, r := range utf16.Encode([]rune(s)) {
				b = binary.LittleEndian.AppendUint16(b, r)
			}
			return b
		}
		if bytes.HasPrefix(m, []byte("NTLMSSP\x00\x03\x00\x00\x00")) && bytes.Contains(m, utf("svc-postern")) && bytes.Contains(m, utf("CORP")) {
			seen = append(seen, "authenticate svc-postern in CORP")
		}
		got <- seen
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		up, err := net.Dial("tcp", req.Host)
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
	pass := writePassword(t, "Winter2026\n")
	p := newProxy(t, config.Client{Proxy: `http://CORP%5Csvc-postern@` + ln.Addr().String(), ProxyPasswordFile: pass, ProxyAuth: "ntlm"}, nil)
	if err := roundTrip(t, p.Dial(direct), echo); err != nil {
		t.Fatal(err)
	}
	if seen := <-got; strings.Join(seen, "; ") != "negotiate; authenticate svc-postern in CORP" {
		t.Errorf("the proxy saw %q", seen)
	}
}

// TestConnectNTLMNotOffered: a proxy that answers the NTLM negotiate
// with Basic only gets a message that says so.
func TestConnectNTLMNotOffered(t *testing.T) {
	fp := startFakeProxy(t, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nProxy-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n", nil)
	pass := writePassword(t, "x\n")
	p := newProxy(t, config.Client{Proxy: "http://svc@" + fp.addr, ProxyPasswordFile: pass, ProxyAuth: "ntlm"}, nil)
	err := roundTrip(t, p.Dial(direct), "10.9.9.9:7443")
	want := "proxy " + fp.addr + ` answered 407 Proxy Authentication Required without an NTLM challenge (it offers Basic, Negotiate): set proxy_auth = "basic" if it takes a password in plain`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got  %v\n want %s", err, want)
	}
}
