package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Wire protocol version 1; docs/protocol.md is the normative description.
const (
	Version = 1
	ALPN    = "postern/1"

	msgHeaderSize = 4    // version, type, uint16 body length
	maxOpenBody   = 1024 // bound on an open request's body
	maxService    = 255
	maxReason     = 255

	msgOpen   = 1
	msgStatus = 2

	tagSource      = 1 // original client address, "ip:port"
	tagDestination = 2 // address the client connected to, "ip:port"
)

// ErrProtocol marks a malformed or oversized message from the peer.
var ErrProtocol = errors.New("protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// OpenRequest is the first message on a stream, from the opener: which
// service to reach, and where the plaintext connection came from.
type OpenRequest struct {
	Service     string
	Source      string // original client "ip:port", may be empty
	Destination string // address the client connected to, may be empty
}

// Status codes, sent by the acceptor in answer to an open request.
type Code uint8

const (
	StatusOK Code = iota
	StatusUnknownService
	StatusNotAllowed
	StatusTargetUnreachable
	StatusOverloaded
	StatusProtocolError
)

func (c Code) String() string {
	switch c {
	case StatusOK:
		return "ok"
	case StatusUnknownService:
		return "unknown service"
	case StatusNotAllowed:
		return "not allowed"
	case StatusTargetUnreachable:
		return "target unreachable"
	case StatusOverloaded:
		return "overloaded"
	case StatusProtocolError:
		return "protocol error"
	}
	return fmt.Sprintf("status %d", uint8(c))
}

// Status is the acceptor's answer: a code and a short reason for people.
type Status struct {
	Code   Code
	Reason string
}

// AppendOpen appends the encoded open request to b.
func AppendOpen(b []byte, r OpenRequest) ([]byte, error) {
	if r.Service == "" || len(r.Service) > maxService {
		return b, fmt.Errorf("open request: service name must be 1..%d bytes", maxService)
	}
	if len(r.Source) > 255 || len(r.Destination) > 255 {
		return b, errors.New("open request: address too long")
	}
	if r.Source != "" && !isAddrPort(r.Source) || r.Destination != "" && !isAddrPort(r.Destination) {
		return b, fmt.Errorf("open request: addresses must be ip:port (source %q, destination %q)", r.Source, r.Destination)
	}
	bodyLen := 1 + len(r.Service)
	if r.Source != "" {
		bodyLen += 2 + len(r.Source)
	}
	if r.Destination != "" {
		bodyLen += 2 + len(r.Destination)
	}
	b = append(b, Version, msgOpen, byte(bodyLen>>8), byte(bodyLen))
	b = append(b, byte(len(r.Service)))
	b = append(b, r.Service...)
	b = appendTag(b, tagSource, r.Source)
	b = appendTag(b, tagDestination, r.Destination)
	return b, nil
}

func appendTag(b []byte, tag byte, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, tag, byte(len(v)))
	return append(b, v...)
}

// ReadOpen reads one open request. Anything malformed or larger than the
// protocol allows is an ErrProtocol.
func ReadOpen(r io.Reader) (OpenRequest, error) {
	body, err := readMessage(r, msgOpen, maxOpenBody)
	if err != nil {
		return OpenRequest{}, err
	}
	return ParseOpenBody(body)
}

// ParseOpenBody decodes the body of an open request. Unknown tags are
// skipped, so later versions can add metadata.
func ParseOpenBody(body []byte) (OpenRequest, error) {
	var req OpenRequest
	if len(body) < 1 {
		return req, protoErr("open request: empty")
	}
	n := int(body[0])
	if n == 0 || 1+n > len(body) {
		return req, protoErr("open request: bad service name length %d", n)
	}
	req.Service = string(body[1 : 1+n])
	if CheckServiceName(req.Service) != nil {
		return req, protoErr("open request: service name %q has characters outside A-Z a-z 0-9 . _ -", req.Service)
	}
	rest := body[1+n:]
	for len(rest) > 0 {
		if len(rest) < 2 || int(rest[1]) > len(rest)-2 {
			return req, protoErr("open request: truncated metadata")
		}
		tag, val := rest[0], string(rest[2:2+int(rest[1])])
		switch tag {
		case tagSource:
			if !isAddrPort(val) {
				return req, protoErr("open request: source %q is not ip:port", val)
			}
			req.Source = val
		case tagDestination:
			if !isAddrPort(val) {
				return req, protoErr("open request: destination %q is not ip:port", val)
			}
			req.Destination = val
		}
		rest = rest[2+int(rest[1]):]
	}
	return req, nil
}

// isAddrPort reports whether s is an "ip:port" address ("[v6]:port" for
// IPv6): the only form of source and destination the protocol carries, so
// nothing else reaches logs and PROXY headers.
func isAddrPort(s string) bool {
	_, err := netip.ParseAddrPort(s)
	return err == nil
}

// CheckServiceName reports whether a non-empty name can travel in an open
// request: at most 255 bytes of A-Z a-z 0-9 . _ -. The config checks
// [[service]] and [[forward]] names with it, so a name that loads is a
// name the peer accepts.
func CheckServiceName(name string) error {
	if len(name) > maxService {
		return fmt.Errorf("%d characters; at most %d", len(name), maxService)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not allowed: use only A-Z a-z 0-9 . _ -", r)
		}
	}
	return nil
}

// AppendStatus appends the encoded status to b. A reason longer than the
// protocol allows is cut.
func AppendStatus(b []byte, s Status) []byte {
	reason := s.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	bodyLen := 1 + len(reason)
	b = append(b, Version, msgStatus, byte(bodyLen>>8), byte(bodyLen))
	b = append(b, byte(s.Code))
	return append(b, reason...)
}

// ReadStatus reads the acceptor's answer.
func ReadStatus(r io.Reader) (Status, error) {
	body, err := readMessage(r, msgStatus, 1+maxReason)
	if err != nil {
		return Status{}, err
	}
	if len(body) < 1 {
		return Status{}, protoErr("status: empty")
	}
	return Status{Code: Code(body[0]), Reason: printable(body[1:])}, nil
}

// readMessage reads a header and a body of at most max bytes. It reads
// exactly the message, never beyond it, so frames that follow stay unread.
func readMessage(r io.Reader, typ byte, max int) ([]byte, error) {
	var hdr [msgHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != Version {
		return nil, protoErr("unsupported protocol version %d (this agent speaks %d)", hdr[0], Version)
	}
	if hdr[1] != typ {
		return nil, protoErr("unexpected message type %d", hdr[1])
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n > max {
		return nil, protoErr("message of %d bytes exceeds the limit of %d", n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// printable keeps a peer-supplied reason safe to log: control bytes become '?'.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// RefusedError is the peer's refusal of an open request.
type RefusedError struct{ Status Status }

func (e *RefusedError) Error() string {
	if e.Status.Reason == "" {
		return "refused by peer: " + e.Status.Code.String()
	}
	return fmt.Sprintf("refused by peer: %s", e.Status.Reason)
}
