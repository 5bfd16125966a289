package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Control exchanges: one request and one reply on an ordinary stream, in
// place of an open request and its status, between two agents (renewal
// of a certificate, a CRL pushed to a site). docs/protocol.md, section
// "Control exchanges", is their normative text. A control request is its
// own message type, so it never collides with a service name, and an
// acceptor that predates it answers with a protocol-error status.
const (
	msgControl      = 3
	msgControlReply = 4

	// MaxControlBody bounds a control request's or reply's body: the
	// operation or reason, and the payload.
	MaxControlBody = 65535
	maxOperation   = 64
)

// Control operations.
const (
	OpCAInfo    = "ca.info"    // does the peer sign renewals? reply: its CA certificate (DER)
	OpCertRenew = "cert.renew" // payload: a CSR (DER); reply: the new chain (PEM)
	OpCRLPush   = "crl.push"   // payload: a CRL (DER); reply: empty
	// OpCertUpdate: the opener's renewed certificate for this tunnel.
	// Payload: uint16 signature length, the signature by the new key over
	// the tunnel's keying material and the new leaf, then the chain (PEM).
	OpCertUpdate = "cert.update"
)

// ControlRequest is the first message of a control stream, from the
// opener: an operation name and its payload.
type ControlRequest struct {
	Op      string
	Payload []byte
}

// ControlCode is the acceptor's verdict on a control request.
type ControlCode uint8

// Control reply codes.
const (
	ControlOK          ControlCode = iota
	ControlUnknownOp               // this agent does not know the operation
	ControlRefused                 // understood and refused; the reason says why
	ControlUnavailable             // this agent does not do that (no [ca], renew = false)
	ControlProtocolError
)

func (c ControlCode) String() string {
	switch c {
	case ControlOK:
		return "ok"
	case ControlUnknownOp:
		return "unknown operation"
	case ControlRefused:
		return "refused"
	case ControlUnavailable:
		return "unavailable"
	case ControlProtocolError:
		return "protocol error"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// ControlReply is the acceptor's answer: a code, a short reason for
// people, and the operation's result.
type ControlReply struct {
	Code    ControlCode
	Reason  string
	Payload []byte
}

// ErrControlUnsupported is returned by ReadControlReply when the peer
// answered with an open-request status: an agent that predates control
// exchanges.
var ErrControlUnsupported = errors.New("peer does not support control exchanges (an older Postern)")

// AppendControl appends the encoded control request to b.
func AppendControl(b []byte, r ControlRequest) ([]byte, error) {
	if err := checkOperation(r.Op); err != nil {
		return b, fmt.Errorf("control request: %w", err)
	}
	n := 1 + len(r.Op) + len(r.Payload)
	if n > MaxControlBody {
		return b, fmt.Errorf("control request %s: %d bytes exceed the limit of %d", r.Op, n, MaxControlBody)
	}
	b = append(b, Version, msgControl, byte(n>>8), byte(n))
	b = append(b, byte(len(r.Op)))
	b = append(b, r.Op...)
	return append(b, r.Payload...), nil
}

// AppendControlReply appends the encoded reply to b. A reason longer than
// the protocol allows is cut; a payload that does not fit is an error.
func AppendControlReply(b []byte, r ControlReply) ([]byte, error) {
	reason := r.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	n := 2 + len(reason) + len(r.Payload)
	if n > MaxControlBody {
		return b, fmt.Errorf("control reply: %d bytes exceed the limit of %d", n, MaxControlBody)
	}
	b = append(b, Version, msgControlReply, byte(n>>8), byte(n))
	b = append(b, byte(r.Code), byte(len(reason)))
	b = append(b, reason...)
	return append(b, r.Payload...), nil
}

// ReadRequest reads the first message of a stream: an open request or a
// control request (ctl is then non-nil). Anything else, or anything
// malformed, is an ErrProtocol.
func ReadRequest(r io.Reader) (open OpenRequest, ctl *ControlRequest, err error) {
	var hdr [msgHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return open, nil, err
	}
	if hdr[0] != Version {
		return open, nil, protoErr("unsupported protocol version %d (this agent speaks %d)", hdr[0], Version)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	switch hdr[1] {
	case msgOpen:
		if n > maxOpenBody {
			return open, nil, protoErr("message of %d bytes exceeds the limit of %d", n, maxOpenBody)
		}
		body, err := readBody(r, n)
		if err != nil {
			return open, nil, err
		}
		open, err = ParseOpenBody(body)
		return open, nil, err
	case msgControl:
		body, err := readBody(r, n)
		if err != nil {
			return open, nil, err
		}
		c, err := ParseControlBody(body)
		if err != nil {
			return open, nil, err
		}
		return open, &c, nil
	}
	return open, nil, protoErr("unexpected message type %d", hdr[1])
}

func readBody(r io.Reader, n int) ([]byte, error) {
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// ParseControlBody decodes the body of a control request.
func ParseControlBody(body []byte) (ControlRequest, error) {
	if len(body) < 1 {
		return ControlRequest{}, protoErr("control request: empty")
	}
	n := int(body[0])
	if n == 0 || n > maxOperation || 1+n > len(body) {
		return ControlRequest{}, protoErr("control request: bad operation length %d", n)
	}
	op := string(body[1 : 1+n])
	if err := checkOperation(op); err != nil {
		return ControlRequest{}, protoErr("control request: %v", err)
	}
	return ControlRequest{Op: op, Payload: body[1+n:]}, nil
}

// ReadControlReply reads the acceptor's answer to a control request. An
// open-request status in its place (an older agent's protocol error) is
// ErrControlUnsupported.
func ReadControlReply(r io.Reader) (ControlReply, error) {
	var hdr [msgHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return ControlReply{}, err
	}
	if hdr[0] != Version {
		return ControlReply{}, protoErr("unsupported protocol version %d (this agent speaks %d)", hdr[0], Version)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	switch hdr[1] {
	case msgStatus:
		if n > 1+maxReason {
			return ControlReply{}, protoErr("message of %d bytes exceeds the limit of %d", n, 1+maxReason)
		}
		body, err := readBody(r, n)
		if err != nil {
			return ControlReply{}, err
		}
		reason := ""
		if len(body) > 1 {
			reason = printable(body[1:])
		}
		return ControlReply{}, fmt.Errorf("%w: it answered %q", ErrControlUnsupported, reason)
	case msgControlReply:
		body, err := readBody(r, n)
		if err != nil {
			return ControlReply{}, err
		}
		return ParseControlReplyBody(body)
	}
	return ControlReply{}, protoErr("unexpected message type %d", hdr[1])
}

// ParseControlReplyBody decodes the body of a control reply.
func ParseControlReplyBody(body []byte) (ControlReply, error) {
	if len(body) < 2 {
		return ControlReply{}, protoErr("control reply: truncated")
	}
	n := int(body[1])
	if 2+n > len(body) {
		return ControlReply{}, protoErr("control reply: bad reason length %d", n)
	}
	return ControlReply{Code: ControlCode(body[0]), Reason: printable(body[2 : 2+n]), Payload: body[2+n:]}, nil
}

// checkOperation allows 1..64 bytes of a-z 0-9 . _ -.
func checkOperation(op string) error {
	if op == "" || len(op) > maxOperation {
		return fmt.Errorf("operation name must be 1..%d bytes", maxOperation)
	}
	for i := 0; i < len(op); i++ {
		c := op[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("operation %q: use only a-z 0-9 . _ -", op)
		}
	}
	return nil
}

// ControlError is a control request the peer did not carry out.
type ControlError struct {
	Op    string
	Reply ControlReply
}

func (e *ControlError) Error() string {
	if e.Reply.Reason == "" {
		return fmt.Sprintf("%s: %s by peer", e.Op, e.Reply.Code)
	}
	return fmt.Sprintf("%s: %s by peer: %s", e.Op, e.Reply.Code, e.Reply.Reason)
}
