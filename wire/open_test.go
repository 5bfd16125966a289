package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/wire"
)

func TestOpenRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  wire.OpenRequest
	}{
		{"service only", wire.OpenRequest{Service: "erp-db"}},
		{"with source", wire.OpenRequest{Service: "erp-db", Source: "192.0.2.7:51234"}},
		{"with destination", wire.OpenRequest{Service: "a", Destination: "127.0.0.1:15432"}},
		{"with both", wire.OpenRequest{Service: "Legacy_ERP.v2-db", Source: "[2001:db8::1]:4000", Destination: "127.0.0.1:15432"}},
		{"longest fields", wire.OpenRequest{Service: strings.Repeat("s", 255), Source: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", Destination: "[::ffff:255.255.255.255]:65535"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b, err := wire.AppendOpen(prefix, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("AppendOpen dropped what b held")
			}
			// The request is followed at once by frames; ReadOpen must read
			// exactly the message and leave the rest.
			r := bytes.NewReader(append(b[len(prefix):], "next"...))
			got, err := wire.ReadOpen(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.req {
				t.Errorf("ReadOpen = %+v, want %+v", got, tt.req)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "next" {
				t.Errorf("left %q unread, want %q", rest, "next")
			}
		})
	}
}

func TestAppendOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		req  wire.OpenRequest
		want string
	}{
		{"empty service", wire.OpenRequest{}, "open request: service name must be 1..255 bytes"},
		{"long service", wire.OpenRequest{Service: strings.Repeat("s", 256)}, "open request: service name must be 1..255 bytes"},
		{"long source", wire.OpenRequest{Service: "s", Source: strings.Repeat("1", 256)}, "open request: address too long"},
		{"long destination", wire.OpenRequest{Service: "s", Destination: strings.Repeat("1", 256)}, "open request: address too long"},
		{"source a host name", wire.OpenRequest{Service: "s", Source: "app.example:1"}, `open request: addresses must be ip:port (source "app.example:1", destination "")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := wire.AppendOpen([]byte("x"), tt.req)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("AppendOpen error = %v, want %q", err, tt.want)
			}
			if string(b) != "x" {
				t.Errorf("AppendOpen changed b to %q on error", b)
			}
		})
	}
}

// message builds version · type · length · body by hand.
func message(version, typ byte, body []byte) []byte {
	return append([]byte{version, typ, byte(len(body) >> 8), byte(len(body))}, body...)
}

func openBody(service string, meta ...byte) []byte {
	return append(append([]byte{byte(len(service))}, service...), meta...)
}

func TestReadOpenUnknownTags(t *testing.T) {
	body := openBody("erp",
		9, 3, 'x', 'y', 'z', // unknown tag
		1, 9, '1', '.', '2', '.', '3', '.', '4', ':', '5',
		200, 0, // unknown tag, empty value
		2, 10, '1', '0', '.', '0', '.', '0', '.', '1', ':', '1',
	)
	got, err := wire.ReadOpen(bytes.NewReader(message(1, 1, body)))
	if err != nil {
		t.Fatal(err)
	}
	want := wire.OpenRequest{Service: "erp", Source: "1.2.3.4:5", Destination: "10.0.0.1:1"}
	if got != want {
		t.Errorf("ReadOpen = %+v, want %+v", got, want)
	}
}

func TestReadOpenErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		want     string // exact error text
		protocol bool   // errors.Is(err, ErrProtocol)
		eof      error  // for truncation: the io error
	}{
		{"wrong version", message(2, 1, openBody("erp")),
			"protocol error: unsupported protocol version 2 (this agent speaks 1)", true, nil},
		{"version zero", message(0, 1, openBody("erp")),
			"protocol error: unsupported protocol version 0 (this agent speaks 1)", true, nil},
		{"status instead of open", message(1, 2, openBody("erp")),
			"protocol error: unexpected message type 2", true, nil},
		{"unknown type", message(1, 77, openBody("erp")),
			"protocol error: unexpected message type 77", true, nil},
		{"oversize body", message(1, 1, openBody("erp", append([]byte{9, 255}, make([]byte, 1024-5)...)...)),
			"protocol error: message of 1025 bytes exceeds the limit of 1024", true, nil},
		{"maximum length field", []byte{1, 1, 0xff, 0xff},
			"protocol error: message of 65535 bytes exceeds the limit of 1024", true, nil},
		{"empty body", message(1, 1, nil),
			"protocol error: open request: empty", true, nil},
		{"empty service", message(1, 1, []byte{0}),
			"protocol error: open request: bad service name length 0", true, nil},
		{"service longer than body", message(1, 1, []byte{5, 'a', 'b'}),
			"protocol error: open request: bad service name length 5", true, nil},
		{"space in service", message(1, 1, openBody("erp db")),
			`protocol error: open request: service name "erp db" has characters outside A-Z a-z 0-9 . _ -`, true, nil},
		{"slash in service", message(1, 1, openBody("../etc")),
			`protocol error: open request: service name "../etc" has characters outside A-Z a-z 0-9 . _ -`, true, nil},
		{"control byte in service", message(1, 1, openBody("a\x00b")),
			`protocol error: open request: service name "a\x00b" has characters outside A-Z a-z 0-9 . _ -`, true, nil},
		{"tag without length", message(1, 1, openBody("erp", 1)),
			"protocol error: open request: truncated metadata", true, nil},
		{"value shorter than its length", message(1, 1, openBody("erp", 1, 10, 'a', 'b')),
			"protocol error: open request: truncated metadata", true, nil},
		{"source not ip:port", message(1, 1, openBody("erp", 1, 9, 'e', 'v', 'i', 'l', '\n', 'l', 'o', 'g', ':')),
			`protocol error: open request: source "evil\nlog:" is not ip:port`, true, nil},
		{"destination a host name", message(1, 1, openBody("erp", 2, 6, 'd', 'b', ':', '5', '4', '3')),
			`protocol error: open request: destination "db:543" is not ip:port`, true, nil},
		{"nothing", nil, "EOF", false, io.EOF},
		{"truncated header", []byte{1, 1, 0}, "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"header without body", []byte{1, 1, 0, 4}, "unexpected EOF", false, io.ErrUnexpectedEOF},
		{"truncated body", message(1, 1, openBody("erp-db"))[:7], "unexpected EOF", false, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.ReadOpen(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("ReadOpen accepted it")
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
			if got := errors.Is(err, wire.ErrProtocol); got != tt.protocol {
				t.Errorf("errors.Is(err, ErrProtocol) = %v, want %v", got, tt.protocol)
			}
			if tt.eof != nil && err != tt.eof {
				t.Errorf("error = %#v, want %#v", err, tt.eof)
			}
		})
	}
}

func TestStatusRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   wire.Status
		want wire.Status
		str  string // Code.String()
	}{
		{"ok", wire.Status{Code: wire.StatusOK}, wire.Status{Code: wire.StatusOK}, "ok"},
		{"unknown service", wire.Status{Code: wire.StatusUnknownService, Reason: `no service "x"`},
			wire.Status{Code: wire.StatusUnknownService, Reason: `no service "x"`}, "unknown service"},
		{"not allowed", wire.Status{Code: wire.StatusNotAllowed, Reason: "not allowed for dns:a.example.com"},
			wire.Status{Code: wire.StatusNotAllowed, Reason: "not allowed for dns:a.example.com"}, "not allowed"},
		{"unreachable", wire.Status{Code: wire.StatusTargetUnreachable, Reason: "dial 10.0.0.5:5432: connection refused"},
			wire.Status{Code: wire.StatusTargetUnreachable, Reason: "dial 10.0.0.5:5432: connection refused"}, "target unreachable"},
		{"overloaded", wire.Status{Code: wire.StatusOverloaded}, wire.Status{Code: wire.StatusOverloaded}, "overloaded"},
		{"protocol", wire.Status{Code: wire.StatusProtocolError, Reason: "bad"},
			wire.Status{Code: wire.StatusProtocolError, Reason: "bad"}, "protocol error"},
		{"unknown code", wire.Status{Code: 42}, wire.Status{Code: 42}, "status 42"},
		{"reason cut at 255", wire.Status{Code: wire.StatusNotAllowed, Reason: strings.Repeat("r", 300)},
			wire.Status{Code: wire.StatusNotAllowed, Reason: strings.Repeat("r", 255)}, "not allowed"},
		{"control bytes", wire.Status{Code: wire.StatusNotAllowed, Reason: "line1\nline2\x1b[31m\x7f\ttab é"},
			wire.Status{Code: wire.StatusNotAllowed, Reason: "line1?line2?[31m??tab é"}, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := wire.AppendStatus(nil, tt.in)
			if len(b) > 4+256 {
				t.Fatalf("status of %d bytes exceeds the protocol's bound", len(b))
			}
			r := bytes.NewReader(append(b, wire.FrameCloseWrite, 0, 0, 0))
			got, err := wire.ReadStatus(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ReadStatus = %+v, want %+v", got, tt.want)
			}
			if r.Len() != 4 {
				t.Errorf("ReadStatus consumed %d bytes past the status", 4-r.Len())
			}
			if s := got.Code.String(); s != tt.str {
				t.Errorf("Code.String() = %q, want %q", s, tt.str)
			}
		})
	}
}

func TestReadStatusErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		want     string
		protocol bool
	}{
		{"empty body", message(1, 2, nil), "protocol error: status: empty", true},
		{"oversize", message(1, 2, make([]byte, 257)), "protocol error: message of 257 bytes exceeds the limit of 256", true},
		{"open instead of status", message(1, 1, openBody("x")), "protocol error: unexpected message type 1", true},
		{"wrong version", message(9, 2, []byte{0}), "protocol error: unsupported protocol version 9 (this agent speaks 1)", true},
		{"truncated", message(1, 2, []byte("\x00reason"))[:6], "unexpected EOF", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.ReadStatus(bytes.NewReader(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("ReadStatus error = %v, want %q", err, tt.want)
			}
			if errors.Is(err, wire.ErrProtocol) != tt.protocol {
				t.Errorf("errors.Is(err, ErrProtocol) = %v, want %v", !tt.protocol, tt.protocol)
			}
		})
	}
}

func TestRefusedError(t *testing.T) {
	tests := []struct {
		st   wire.Status
		want string
	}{
		{wire.Status{Code: wire.StatusNotAllowed, Reason: "not allowed for dns:partner-a.example.com"},
			"refused by peer: not allowed for dns:partner-a.example.com"},
		{wire.Status{Code: wire.StatusOverloaded}, "refused by peer: overloaded"},
	}
	for _, tt := range tests {
		if got := (&wire.RefusedError{Status: tt.st}).Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestReadOpenAtLimit(t *testing.T) {
	var meta []byte
	for _, n := range []int{255, 255, 255, 247} {
		meta = append(meta, 9, byte(n))
		meta = append(meta, bytes.Repeat([]byte{'m'}, n)...)
	}
	body := openBody("erp", meta...)
	if len(body) != 1024 {
		t.Fatalf("test body is %d bytes, want 1024", len(body))
	}
	got, err := wire.ReadOpen(bytes.NewReader(message(1, 1, body)))
	if err != nil || got.Service != "erp" {
		t.Fatalf("ReadOpen of a 1024-byte body = %+v, %v; want service erp", got, err)
	}
}
