package wire

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RefusalALPN is the protocol a client offers, alone, on a connection that
// asks a hub why it refused the client's certificate (docs/protocol.md,
// "Refusal reasons"). The hub answers with one refusal message and closes.
const RefusalALPN = "postern-refusal/1"

// The refusal message: magic, version, reason code, uint16 reason length,
// reason. The first byte is 0xFF, never a yamux version (0) nor a message
// type of the open request or status, so the message cannot be taken for
// either.
const (
	refusalMagic      = "\xffPRF"
	refusalVersion    = 1
	RefusalHeaderSize = len(refusalMagic) + 4 // magic, version, code, length
	// MaxRefusalReason bounds the reason text: the hub's sentence with the
	// certificate's issuer, serial and SHA-256 fingerprint fits.
	MaxRefusalReason = 512
)

// RefusalCode is the class of a hub's refusal of a client certificate
// whose chain verifies to a CA the hub trusts.
type RefusalCode uint8

const (
	RefusalNone        RefusalCode = iota // the certificate is accepted now: nothing to explain
	RefusalExpired                        // past its not-after
	RefusalNotYetValid                    // before its not-before
	RefusalRevoked                        // revoked by a CRL or an OCSP answer
	RefusalIdentity                       // matches none of the hub's peer identities or pins
	RefusalUnchecked                      // revocation could not be checked (stale CRL, OCSP without answer)
	RefusalOther                          // another policy refusal of a verified chain
	refusalCodes
)

func (c RefusalCode) String() string {
	switch c {
	case RefusalNone:
		return "none"
	case RefusalExpired:
		return "expired"
	case RefusalNotYetValid:
		return "not yet valid"
	case RefusalRevoked:
		return "revoked"
	case RefusalIdentity:
		return "identity not allowed"
	case RefusalUnchecked:
		return "revocation not checked"
	case RefusalOther:
		return "other"
	}
	return "unknown"
}

// Refusal is the hub's answer on a refusal-reason connection.
type Refusal struct {
	Code   RefusalCode
	Reason string // the hub's sentence; empty with RefusalNone
}

// CleanReason makes s fit a refusal message: control characters become
// spaces, invalid UTF-8 becomes U+FFFD, and a text longer than
// MaxRefusalReason bytes is cut at a character boundary and ends in "…".
// It is idempotent.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= MaxRefusalReason {
		return s
	}
	const ellipsis = "…"
	cut := MaxRefusalReason - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// AppendRefusal appends the encoded refusal message to b. The reason is
// passed through CleanReason first.
func AppendRefusal(b []byte, r Refusal) []byte {
	reason := CleanReason(r.Reason)
	b = append(b, refusalMagic...)
	b = append(b, refusalVersion, byte(r.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

// errNotRefusal says the bytes do not start a refusal message.
var errNotRefusal = errors.New("not a refusal message")

// ParseRefusal decodes the refusal message at the start of b and returns
// it with the number of bytes it took. An incomplete message returns
// io.ErrUnexpectedEOF; anything malformed (wrong magic or version, an
// unknown code, a reason that is too long, not UTF-8 or holds control
// characters, a reason with RefusalNone) is a protocol error.
func ParseRefusal(b []byte) (Refusal, int, error) {
	n := min(len(b), len(refusalMagic))
	if string(b[:n]) != refusalMagic[:n] {
		return Refusal{}, 0, protoErr("%v", errNotRefusal)
	}
	if len(b) < RefusalHeaderSize {
		return Refusal{}, 0, io.ErrUnexpectedEOF
	}
	h := b[len(refusalMagic):]
	if h[0] != refusalVersion {
		return Refusal{}, 0, protoErr("refusal message version %d, want %d", h[0], refusalVersion)
	}
	code := RefusalCode(h[1])
	if code >= refusalCodes {
		return Refusal{}, 0, protoErr("unknown refusal code %d", h[1])
	}
	size := int(binary.BigEndian.Uint16(h[2:4]))
	if size > MaxRefusalReason {
		return Refusal{}, 0, protoErr("refusal reason of %d bytes exceeds %d", size, MaxRefusalReason)
	}
	if len(b) < RefusalHeaderSize+size {
		return Refusal{}, 0, io.ErrUnexpectedEOF
	}
	reason := string(b[RefusalHeaderSize : RefusalHeaderSize+size])
	if CleanReason(reason) != reason {
		return Refusal{}, 0, protoErr("refusal reason is not clean UTF-8 text")
	}
	if code == RefusalNone && reason != "" {
		return Refusal{}, 0, protoErr("a refusal message with code none carries a reason")
	}
	return Refusal{Code: code, Reason: reason}, RefusalHeaderSize + size, nil
}

// ReadRefusal reads one refusal message from r: at most
// RefusalHeaderSize+MaxRefusalReason bytes.
func ReadRefusal(r io.Reader) (Refusal, error) {
	buf := make([]byte, RefusalHeaderSize, RefusalHeaderSize+MaxRefusalReason)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Refusal{}, err
	}
	if _, _, err := ParseRefusal(buf); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Refusal{}, err
	}
	size := int(binary.BigEndian.Uint16(buf[RefusalHeaderSize-2:]))
	buf = buf[:RefusalHeaderSize+size]
	if _, err := io.ReadFull(r, buf[RefusalHeaderSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Refusal{}, err
	}
	ref, _, err := ParseRefusal(buf)
	return ref, err
}
