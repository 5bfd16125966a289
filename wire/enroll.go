package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// EnrollALPN selects an enrollment connection on a hub's tunnel listener:
// no client certificate, one request, one response, then close
// (docs/protocol.md, "Enrollment").
const EnrollALPN = "postern-enroll/1"

// EnrollVersion is the first byte of an enrollment request and response.
const EnrollVersion = 1

// Enrollment bounds: larger fields are refused before they are read.
const (
	MaxEnrollToken  = 2048     // bytes of the token
	MaxEnrollCSR    = 16 << 10 // bytes of the certificate request (DER)
	MaxEnrollReason = 512      // bytes of the response's reason
	MaxEnrollPEM    = 64 << 10 // bytes of the chain, and of the CA bundle
)

// EnrollCode says how an enrollment ended. The names (String) are what
// both sides log.
type EnrollCode uint8

// The enrollment codes. The refusals match pki's Refused… words.
const (
	EnrollOK          EnrollCode = 0
	EnrollMalformed   EnrollCode = 1 // token or request does not parse
	EnrollUnknown     EnrollCode = 2 // no such invitation
	EnrollTampered    EnrollCode = 3 // secret or CA fingerprint does not match
	EnrollUsed        EnrollCode = 4 // invitation already redeemed
	EnrollExpired     EnrollCode = 5 // invitation past its expiry
	EnrollNotGranted  EnrollCode = 6 // a name the invitation or the hub's [ca] does not grant
	EnrollKeyType     EnrollCode = 7 // key type not accepted
	EnrollBadRequest  EnrollCode = 8 // CSR signature or key not acceptable
	EnrollUnavailable EnrollCode = 9 // the hub could not sign now (its log says why)
)

var enrollNames = [...]string{"ok", "malformed", "unknown-invitation", "tampered", "used", "expired", "not-granted", "key-type", "bad-request", "unavailable"}

func (c EnrollCode) String() string {
	if int(c) < len(enrollNames) {
		return enrollNames[c]
	}
	return fmt.Sprintf("code-%d", uint8(c))
}

// EnrollCodeOf returns the code named name, and EnrollUnavailable for a
// name it does not know.
func EnrollCodeOf(name string) EnrollCode {
	for i, n := range enrollNames {
		if n == name {
			return EnrollCode(i)
		}
	}
	return EnrollUnavailable
}

// EnrollRequest is what a new site sends: the token and its CSR (DER).
type EnrollRequest struct {
	Token string
	CSR   []byte
}

// EnrollResponse is the hub's answer. On EnrollOK, Chain (the site's
// certificate, leaf first, PEM) and CA (the CA bundle to trust, PEM) are
// set; otherwise both are empty and Reason says why.
type EnrollResponse struct {
	Code   EnrollCode
	Reason string
	Chain  []byte
	CA     []byte
}

// ErrEnroll is wrapped by every enrollment decoding error.
var ErrEnroll = errors.New("enrollment protocol error")

func enrollErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrEnroll, fmt.Sprintf(format, args...))
}

// AppendEnrollRequest encodes r:
//
//	version u8 | token len u16 | token | csr len u16 | csr
func AppendEnrollRequest(b []byte, r EnrollRequest) ([]byte, error) {
	if len(r.Token) == 0 || len(r.Token) > MaxEnrollToken || len(r.CSR) == 0 || len(r.CSR) > MaxEnrollCSR {
		return b, enrollErr("token %d bytes, request %d bytes: each must be 1 to %d / %d", len(r.Token), len(r.CSR), MaxEnrollToken, MaxEnrollCSR)
	}
	b = append(b, EnrollVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Token)))
	b = append(b, r.Token...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.CSR)))
	return append(b, r.CSR...), nil
}

// ReadEnrollRequest reads one request, refusing a field over its bound
// before reading it.
func ReadEnrollRequest(r io.Reader) (EnrollRequest, error) {
	br := enrollReader{r: r}
	br.version()
	tok := br.field(2, MaxEnrollToken, "token")
	csr := br.field(2, MaxEnrollCSR, "certificate request")
	if br.err != nil {
		return EnrollRequest{}, br.err
	}
	if len(tok) == 0 || len(csr) == 0 {
		return EnrollRequest{}, enrollErr("empty token or certificate request")
	}
	return EnrollRequest{Token: string(tok), CSR: csr}, nil
}

// AppendEnrollResponse encodes r:
//
//	version u8 | code u8 | reason len u16 | reason | chain len u32 | chain | ca len u32 | ca
func AppendEnrollResponse(b []byte, r EnrollResponse) ([]byte, error) {
	if err := r.check(); err != nil {
		return b, err
	}
	b = append(b, EnrollVersion, byte(r.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Reason)))
	b = append(b, r.Reason...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Chain)))
	b = append(b, r.Chain...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.CA)))
	return append(b, r.CA...), nil
}

func (r EnrollResponse) check() error {
	switch {
	case int(r.Code) >= len(enrollNames):
		return enrollErr("unknown code %d", r.Code)
	case len(r.Reason) > MaxEnrollReason || !enrollText(r.Reason):
		return enrollErr("reason: %d bytes, or not printable text", len(r.Reason))
	case len(r.Chain) > MaxEnrollPEM || len(r.CA) > MaxEnrollPEM:
		return enrollErr("chain %d bytes, CA %d bytes: over %d", len(r.Chain), len(r.CA), MaxEnrollPEM)
	case r.Code == EnrollOK && (len(r.Chain) == 0 || len(r.CA) == 0):
		return enrollErr("ok without a chain and a CA bundle")
	case r.Code != EnrollOK && (len(r.Chain) > 0 || len(r.CA) > 0):
		return enrollErr("%s with a certificate", r.Code)
	}
	return nil
}

// ReadEnrollResponse reads one response; what it returns passes the same
// checks AppendEnrollResponse makes.
func ReadEnrollResponse(r io.Reader) (EnrollResponse, error) {
	br := enrollReader{r: r}
	br.version()
	code := EnrollCode(br.u8())
	reason := br.field(2, MaxEnrollReason, "reason")
	chain := br.field(4, MaxEnrollPEM, "certificate chain")
	ca := br.field(4, MaxEnrollPEM, "CA bundle")
	if br.err != nil {
		return EnrollResponse{}, br.err
	}
	resp := EnrollResponse{Code: code, Reason: string(reason), Chain: chain, CA: ca}
	if err := resp.check(); err != nil {
		return EnrollResponse{}, err
	}
	return resp, nil
}

func enrollText(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0xfffd })
}

// enrollReader reads fields; the first error sticks.
type enrollReader struct {
	r   io.Reader
	err error
}

func (e *enrollReader) read(n int) []byte {
	if e.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(e.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = enrollErr("cut short")
		}
		e.err = err
		return nil
	}
	return b
}

func (e *enrollReader) u8() byte {
	if b := e.read(1); b != nil {
		return b[0]
	}
	return 0
}

func (e *enrollReader) version() {
	if v := e.u8(); e.err == nil && v != EnrollVersion {
		e.err = enrollErr("version %d, this side speaks %d", v, EnrollVersion)
	}
}

// field reads a length of size bytes, then that many bytes, at most max.
func (e *enrollReader) field(size, max int, what string) []byte {
	b := e.read(size)
	if b == nil {
		return nil
	}
	var n uint32
	if size == 2 {
		n = uint32(binary.BigEndian.Uint16(b))
	} else {
		n = binary.BigEndian.Uint32(b)
	}
	if n > uint32(max) {
		e.err = enrollErr("%s of %d bytes, more than %d", what, n, max)
		return nil
	}
	if n == 0 {
		return []byte{}
	}
	return e.read(int(n))
}
