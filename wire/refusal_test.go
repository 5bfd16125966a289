package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestRefusalRoundTrip(t *testing.T) {
	for _, r := range []Refusal{
		{Code: RefusalNone},
		{Code: RefusalExpired, Reason: `client certificate CN="site-a" expired 3h12m ago`},
		{Code: RefusalIdentity, Reason: "ünïcödé — fine"},
	} {
		b := AppendRefusal(nil, r)
		got, n, err := ParseRefusal(b)
		if err != nil || got != r || n != len(b) {
			t.Errorf("ParseRefusal(AppendRefusal(%+v)) = %+v, %d, %v", r, got, n, err)
		}
		got, err = ReadRefusal(bytes.NewReader(append(b, "trailing"...)))
		if err != nil || got != r {
			t.Errorf("ReadRefusal = %+v, %v", got, err)
		}
	}
}

func TestRefusalClean(t *testing.T) {
	long := strings.Repeat("é", MaxRefusalReason) // 2 bytes each
	for _, tc := range []struct{ in, want string }{
		{"a\nb\x00c\x1b[31m", "a b c [31m"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{long, strings.Repeat("é", (MaxRefusalReason-3)/2) + "…"},
	} {
		got := CleanReason(tc.in)
		if got != tc.want {
			t.Errorf("CleanReason(%.40q) = %.40q, want %.40q", tc.in, got, tc.want)
		}
		if len(got) > MaxRefusalReason || CleanReason(got) != got {
			t.Errorf("CleanReason(%.40q) = %.40q: too long or not idempotent", tc.in, got)
		}
	}
	// What goes out is what comes in, cleaned.
	got, _, err := ParseRefusal(AppendRefusal(nil, Refusal{Code: RefusalRevoked, Reason: "x\ny"}))
	if err != nil || got.Reason != "x y" {
		t.Errorf("parse of an unclean reason: %+v, %v", got, err)
	}
}

func TestRefusalMalformed(t *testing.T) {
	good := AppendRefusal(nil, Refusal{Code: RefusalRevoked, Reason: "revoked"})
	set := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	for name, b := range map[string][]byte{
		"yamux header":  {0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"tls record":    {0x15, 3, 3, 0, 2, 2, 42},
		"version":       set(4, 2),
		"code":          set(5, byte(refusalCodes)),
		"too long":      append(bytes.Clone(good[:6]), 0x02, 0x01),
		"control":       set(RefusalHeaderSize, '\n'),
		"none + reason": set(5, byte(RefusalNone)),
	} {
		if _, _, err := ParseRefusal(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: ParseRefusal = %v, want a protocol error", name, err)
		}
		if _, err := ReadRefusal(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: ReadRefusal accepted it", name)
		}
	}
	for i := range len(good) {
		if _, _, err := ParseRefusal(good[:i]); err != io.ErrUnexpectedEOF {
			t.Errorf("first %d bytes: %v, want io.ErrUnexpectedEOF", i, err)
		}
	}
}

func FuzzParseRefusal(f *testing.F) {
	f.Add(AppendRefusal(nil, Refusal{Code: RefusalExpired, Reason: "client certificate expired"}))
	f.Add(AppendRefusal(nil, Refusal{Code: RefusalNone}))
	f.Add([]byte("\xffPRF\x01\x03\x00\x02\xc3"))
	f.Add([]byte("\xffPRF\x01\x09\x00\x00"))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, n, err := ParseRefusal(data)
		if len(data) > 0 && data[0] == 0 && err == nil {
			t.Fatalf("a yamux header (first byte 0) parsed as a refusal")
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			if err == io.ErrUnexpectedEOF && !bytes.HasPrefix([]byte(refusalMagic), data[:min(len(data), 4)]) {
				t.Fatalf("wants more bytes after a wrong magic %x", data)
			}
			if _, rerr := ReadRefusal(bytes.NewReader(data)); rerr == nil {
				t.Fatalf("ReadRefusal accepted what ParseRefusal refused: %v", err)
			}
			return
		}
		if n > RefusalHeaderSize+MaxRefusalReason || n > len(data) {
			t.Fatalf("took %d bytes of %d", n, len(data))
		}
		if r.Code >= refusalCodes || len(r.Reason) > MaxRefusalReason || !utf8.ValidString(r.Reason) ||
			strings.IndexFunc(r.Reason, unicode.IsControl) >= 0 {
			t.Fatalf("accepted %+v", r)
		}
		if b := AppendRefusal(nil, r); !bytes.Equal(b, data[:n]) {
			t.Fatalf("re-encoding %+v gives %x, not the %x parsed", r, b, data[:n])
		}
		got, err := ReadRefusal(bytes.NewReader(data))
		if err != nil || got != r {
			t.Fatalf("ReadRefusal = %+v, %v; ParseRefusal = %+v", got, err, r)
		}
	})
}

func FuzzCleanReason(f *testing.F) {
	f.Add("client certificate revoked")
	f.Add("a\x00b\n\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		c := CleanReason(s)
		if len(c) > MaxRefusalReason || !utf8.ValidString(c) || strings.IndexFunc(c, unicode.IsControl) >= 0 || CleanReason(c) != c {
			t.Fatalf("CleanReason(%q) = %q", s, c)
		}
		if len(s) <= MaxRefusalReason && utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0 && c != s {
			t.Fatalf("CleanReason changed clean text %q to %q", s, c)
		}
		got, _, err := ParseRefusal(AppendRefusal(nil, Refusal{Code: RefusalOther, Reason: s}))
		if err != nil || got.Reason != c {
			t.Fatalf("round trip of %q: %+v, %v", s, got, err)
		}
	})
}
