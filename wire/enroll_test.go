package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestEnrollRoundTrip(t *testing.T) {
	req := EnrollRequest{Token: "postern-invite-1.abc", CSR: []byte{0x30, 0x82, 1, 2}}
	b, err := AppendEnrollRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnrollRequest(bytes.NewReader(b))
	if err != nil || got.Token != req.Token || !bytes.Equal(got.CSR, req.CSR) {
		t.Fatalf("request: %+v, %v", got, err)
	}
	for _, resp := range []EnrollResponse{
		{Code: EnrollOK, Chain: []byte("-----BEGIN CERTIFICATE-----"), CA: []byte("ca")},
		{Code: EnrollUsed, Reason: "invitation 0a0b was already used"},
	} {
		b, err := AppendEnrollResponse(nil, resp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadEnrollResponse(bytes.NewReader(b))
		if err != nil || got.Code != resp.Code || got.Reason != resp.Reason || !bytes.Equal(got.Chain, resp.Chain) || !bytes.Equal(got.CA, resp.CA) {
			t.Fatalf("response: %+v, %v", got, err)
		}
	}
	for name, code := range map[string]EnrollCode{"used": EnrollUsed, "not-granted": EnrollNotGranted, "nonsense": EnrollUnavailable} {
		if EnrollCodeOf(name) != code {
			t.Errorf("EnrollCodeOf(%q) = %v", name, EnrollCodeOf(name))
		}
	}
}

func TestEnrollBounds(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{2, 0, 1, 'x', 0, 1, 0}, "version 2"},
		{[]byte{1, 0x08, 0x01}, "token of 2049 bytes, more than 2048"},
		{[]byte{1, 0, 1, 'x', 0x40, 0x01}, "certificate request of 16385 bytes"},
		{[]byte{1, 0, 3, 'x'}, "cut short"},
		{[]byte{1, 0, 0, 0, 0}, "empty token"},
	} {
		_, err := ReadEnrollRequest(bytes.NewReader(tc.in))
		if !errors.Is(err, ErrEnroll) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("% x: got %v, want …%s…", tc.in, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "ok without a chain"},
		{[]byte{1, 4, 0, 0, 0, 0, 0, 1, 'c', 0, 0, 0, 0}, "used with a certificate"},
		{[]byte{1, 4, 0x02, 0x01}, "reason of 513 bytes"},
		{[]byte{1, 4, 0, 0, 0, 1, 0, 1}, "certificate chain of 65537 bytes"},
		{[]byte{1, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "unknown code 99"},
		{[]byte{1, 4, 0, 1, '\n', 0, 0, 0, 0, 0, 0, 0, 0}, "not printable"},
	} {
		_, err := ReadEnrollResponse(bytes.NewReader(tc.in))
		if !errors.Is(err, ErrEnroll) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("% x: got %v, want …%s…", tc.in, err, tc.want)
		}
	}
}

// FuzzEnrollRequest: what parses is within bounds, re-encodes to exactly
// the bytes read, and reads back equal.
func FuzzEnrollRequest(f *testing.F) {
	b, _ := AppendEnrollRequest(nil, EnrollRequest{Token: "postern-invite-1.abc", CSR: []byte{0x30, 3, 1, 2, 3}})
	f.Add(b)
	f.Add([]byte{1, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		req, err := ReadEnrollRequest(r)
		if err != nil {
			return
		}
		if len(req.Token) == 0 || len(req.Token) > MaxEnrollToken || len(req.CSR) == 0 || len(req.CSR) > MaxEnrollCSR {
			t.Fatalf("out of bounds: %d, %d", len(req.Token), len(req.CSR))
		}
		used := len(in) - r.Len()
		out, err := AppendEnrollRequest(nil, req)
		if err != nil || !bytes.Equal(out, in[:used]) {
			t.Fatalf("re-encoded % x, read % x (%v)", out, in[:used], err)
		}
	})
}

// FuzzEnrollResponse: what parses passes the encoder's checks (ok carries
// a certificate, a refusal none, printable bounded reason) and re-encodes
// to exactly the bytes read.
func FuzzEnrollResponse(f *testing.F) {
	b, _ := AppendEnrollResponse(nil, EnrollResponse{Code: EnrollOK, Chain: []byte("chain"), CA: []byte("ca")})
	f.Add(b)
	b, _ = AppendEnrollResponse(nil, EnrollResponse{Code: EnrollExpired, Reason: "expired"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		resp, err := ReadEnrollResponse(r)
		if err != nil {
			return
		}
		if (resp.Code == EnrollOK) != (len(resp.Chain) > 0) || len(resp.Reason) > MaxEnrollReason || !enrollText(resp.Reason) {
			t.Fatalf("accepted %+v", resp)
		}
		used := len(in) - r.Len()
		out, err := AppendEnrollResponse(nil, resp)
		if err != nil || !bytes.Equal(out, in[:used]) {
			t.Fatalf("re-encoded % x, read % x (%v)", out, in[:used], err)
		}
	})
}
