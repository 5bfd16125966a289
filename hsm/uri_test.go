package hsm

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=post%20ern;object=site-a;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/postern/token.pin")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "post ern" || u.Object != "site-a" || u.Type != "private" ||
		u.ModulePath != "/usr/lib/softhsm/libsofthsm2.so" || u.PINSource != "/etc/postern/token.pin" {
		t.Fatalf("parsed %+v", u)
	}
	if got := u.String(); got != "pkcs11:token=post%20ern;object=site-a;type=private" {
		t.Fatalf("String() = %q", got)
	}
	u, err = ParseURI("PKCS11:serial=42;id=%01%02?module-path=/m.so&pin-source=file:///p")
	if err != nil || u.Serial != "42" || !bytes.Equal(u.ID, []byte{1, 2}) || u.PINSource != "/p" {
		t.Fatalf("got %+v, %v", u, err)
	}
	for in, want := range map[string]string{
		"pkcs11:token=a;object=b":                                             "no module-path",
		"pkcs11:token=a;object=b?module-path=lib.so":                          "not an absolute path",
		"pkcs11:object=b?module-path=/m.so":                                   "no token",
		"pkcs11:token=a?module-path=/m.so":                                    "no object",
		"pkcs11:token=a;objekt=b?module-path=/m.so":                           `unknown path attribute "objekt"`,
		"pkcs11:token=a;token=b;object=c?module-path=/m.so":                   `"token" given twice`,
		"pkcs11:token=a;object=b?module-path=/m.so&pin-source=file:x.pin":     "pin-source \"x.pin\" is not an absolute path",
		"pkcs11:token=a;object=b;type=secret-key?module-path=/m.so":           "type=secret-key",
		"pkcs11:token=%zz;object=b?module-path=/m.so":                         "bad percent-encoding",
		"pkcs11:token=a;object=b?module-path=/m.so&pin-value=1&pin-source=/p": "both pin-source and pin-value",
		"/etc/postern/tls.key":                                                "does not start with pkcs11:",
	} {
		if _, err := ParseURI(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURI(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("pkcs11:token=a?module-path=/m.so&pin-value=1234&x-a=b")
	if strings.Contains(got, "1234") || !strings.Contains(got, "pin-value=xxxxx&x-a=b") {
		t.Fatalf("Redact = %q", got)
	}
}

// FuzzParseURI checks that a parsed URI has what Postern needs, that its
// String form parses back to the same token and object, and that no
// pin-value appears in an error or in String.
func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=postern;object=site-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/p.pin")
	f.Add("pkcs11:serial=1;id=%00%ff;type=cert?module-path=/m.so&pin-value=secret")
	f.Add("pkcs11:slot-id=7;object=a%3bb?module-path=/m.so")
	f.Fuzz(func(t *testing.T, s string) {
		sep := "?"
		if strings.Contains(s, "?") {
			sep = "&"
		}
		if _, err := ParseURI(s + sep + "pin-value=S3CR3T"); err != nil && strings.Contains(err.Error(), "S3CR3T") {
			t.Fatalf("error shows the pin-value: %v", err)
		}
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		if !IsURI(s) || u.ModulePath == "" || (u.Token == "" && u.Serial == "" && u.Slot == nil) || (u.Object == "" && len(u.ID) == 0) {
			t.Fatalf("accepted incomplete %q: %+v", s, u)
		}
		str := u.String()
		if strings.Contains(str, "?") || strings.Contains(str, "pin-") {
			t.Fatalf("String() %q shows the query", str)
		}
		back, err := ParseURI(str + "?module-path=" + "/m.so")
		if err != nil {
			t.Fatalf("String() %q does not parse back: %v", str, err)
		}
		if back.Token != u.Token || back.Object != u.Object || back.Serial != u.Serial || !bytes.Equal(back.ID, u.ID) || back.Type != u.Type {
			t.Fatalf("round trip of %q: %+v != %+v", s, back, u)
		}
	})
}
