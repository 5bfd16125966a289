package pki

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func seedToken() Token {
	t := Token{Hub: "hub.example.com:7443", Expires: time.Unix(1790000000, 0).UTC(),
		Identities: []string{"cn:site-b.example.com", "dns:site-b.example.com", "ip:192.0.2.7", "uri:spiffe://example.com/site-b"}}
	for i := range t.CA {
		t.CA[i] = byte(i)
	}
	t.ID[0], t.Secret[31] = 0xab, 0xcd
	return t
}

func TestTokenRoundTrip(t *testing.T) {
	want := seedToken()
	got, err := ParseToken("  " + want.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "does not start with postern-invite-1."},
		{"postern-invite-2.AAAA", "a token format this version does not read"},
		{TokenPrefix + "AAAA", "cut short"},
		{TokenPrefix + base64.RawURLEncoding.EncodeToString(append(must(base64.RawURLEncoding.DecodeString(strings.TrimPrefix(want.String(), TokenPrefix))), 0)), "1 bytes after its end"},
		{want.String()[:len(want.String())-3] + "!!!", "not base64url"},
		{TokenPrefix + strings.Repeat("A", MaxTokenLen), "more than 2048"},
	} {
		_, err := ParseToken(tc.in)
		if !errors.Is(err, ErrTokenMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.40q: got %v, want …%s…", tc.in, err, tc.want)
		}
	}
	bad := want
	bad.Hub = "hub:99999"
	if _, err := ParseToken(bad.String()); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("bad port: %v", err)
	}
	bad = want
	bad.Identities = []string{"email:x@example.com"}
	if _, err := ParseToken(bad.String()); err == nil {
		t.Error("unknown identity kind parsed")
	}
}

// FuzzParseToken: a token that parses is canonical (it encodes back to the
// same text, so no two texts redeem as one token), names a dialable hub
// and a bounded list of identities that read as names; anything else is
// ErrTokenMalformed.
func FuzzParseToken(f *testing.F) {
	s := seedToken().String()
	f.Add(s)
	f.Add(s[:len(s)/2])
	f.Add(TokenPrefix)
	f.Add("postern-invite-1.AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		tok, err := ParseToken(in)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("error %v is not ErrTokenMalformed", err)
			}
			return
		}
		if out := tok.String(); out != strings.TrimSpace(in) {
			t.Fatalf("not canonical: %q encodes back as %q", in, out)
		}
		again, err := ParseToken(tok.String())
		if err != nil || !reflect.DeepEqual(again, tok) {
			t.Fatalf("reparse: %v %+v", err, again)
		}
		if checkHubAddress(tok.Hub) != nil || len(tok.Identities) > MaxTokenIdentities || tok.Expires.Unix() <= 0 {
			t.Fatalf("accepted %+v", tok)
		}
		if _, err := NamesFromIdentities(tok.Identities); err != nil && len(tok.Identities) > 0 {
			t.Fatalf("identities %q accepted but do not read as names: %v", tok.Identities, err)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// FuzzInvitationRecord: a record that parses can be acted on (its secret
// hash, identities, usage and validity read) and survives being written
// back (what Redeem does when it marks it used).
func FuzzInvitationRecord(f *testing.F) {
	const id = "00112233445566778899aabbccddeeff"
	f.Add([]byte(`{"id":"` + id + `","secret_sha256":"` + strings.Repeat("ab", 32) + `","identities":["dns:a.example.com"],"usage":"client","validity":"1h0m0s","expires_at":"2026-12-02T03:22:18Z"}`))
	f.Add([]byte(`{"id":"` + id + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var inv Invitation
		if err := parseInvitation(data, id, &inv); err != nil {
			return
		}
		if _, err := NamesFromIdentities(inv.Identities); err != nil {
			t.Fatalf("identities %q accepted: %v", inv.Identities, err)
		}
		out, err := json.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		var again Invitation
		if err := parseInvitation(out, id, &again); err != nil {
			t.Fatalf("written back, the record no longer parses: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again.Identities, inv.Identities) || again.SecretSHA256 != inv.SecretSHA256 || !again.ExpiresAt.Equal(inv.ExpiresAt) {
			t.Fatalf("round trip changed the record: %+v -> %+v", inv, again)
		}
	})
}
