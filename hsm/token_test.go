package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/internal/softhsm"
)

func mustParse(t *testing.T, s string) *hsm.URI {
	t.Helper()
	u, err := hsm.ParseURI(s)
	if err != nil {
		t.Fatalf("ParseURI(%q): %v", s, err)
	}
	return u
}

// TestGenerateOpenSign makes ECDSA and RSA keys inside a SoftHSM2 token,
// finds them again by label and checks their signatures with the public key.
func TestGenerateOpenSign(t *testing.T) {
	h := softhsm.New(t, "postern")
	digest := sha256.Sum256([]byte("postern"))
	for _, kind := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048"} {
		u := mustParse(t, h.URI("postern", kind))
		made, err := hsm.Generate(u, kind)
		if err != nil {
			t.Fatalf("Generate %s: %v", kind, err)
		}
		if _, err := hsm.Generate(u, kind); err == nil || !strings.Contains(err.Error(), "already holds a key") {
			t.Fatalf("second Generate %s: got %v, want a refusal", kind, err)
		}
		k, err := hsm.Open(u)
		if err != nil {
			t.Fatalf("Open %s: %v", kind, err)
		}
		if k.Token != "postern" || k.Slot != made.Slot {
			t.Fatalf("Open %s: token %q slot %d, want postern slot %d", kind, k.Token, k.Slot, made.Slot)
		}
		switch pub := k.Public().(type) {
		case *ecdsa.PublicKey:
			sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatalf("%s: signature does not verify (err %v)", kind, err)
			}
		case *rsa.PublicKey:
			opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			sig, err := k.Sign(rand.Reader, digest[:], opts)
			if err != nil || rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, opts) != nil {
				t.Fatalf("%s: PSS signature does not verify (err %v)", kind, err)
			}
		default:
			t.Fatalf("%s: public key %T", kind, pub)
		}
	}
}

// TestNamedErrors checks that a missing token, a wrong PIN and a missing
// object are each named.
func TestNamedErrors(t *testing.T) {
	h := softhsm.New(t, "postern")
	for _, tc := range []struct{ name, uri, want string }{
		{"token", h.URI("nosuch", "a"), `token "nosuch" not found (tokens: "postern" (slot `},
		{"pin", h.URIWithPIN("postern", "a", h.WritePIN(t, "wrong.pin", "9999")), `token "postern": PIN rejected (CKR_PIN_INCORRECT): check pin-source ` + h.Dir},
		{"object", h.URI("postern", "nosuch"), `no private key with label "nosuch" in token "postern" (slot `},
		{"module", "pkcs11:token=postern;object=a?module-path=/nonexistent/lib.so&pin-source=file:" + h.PINFile, "module-path /nonexistent/lib.so: cannot load"},
	} {
		_, err := hsm.Open(mustParse(t, tc.uri))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	// The token is logged in now; a wrong PIN must still not pass.
	_, err := hsm.Open(mustParse(t, h.URIWithPIN("postern", "a", h.WritePIN(t, "wrong2.pin", "0000"))))
	if want := `token "postern" is already logged in by this process with another PIN`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("wrong PIN after a login: got %v, want %q", err, want)
	}
}
