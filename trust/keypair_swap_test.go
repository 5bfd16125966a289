package trust

import (
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
)

func TestLoadMaterialSwapped(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	f := ca.Issue(t, testca.Options{CN: "site-a"}).Write(t, dir, "site", ca)
	_, err := LoadMaterial(Files{Cert: f.Key, Key: f.Cert, CA: f.CA, MinVersion: "1.3"})
	want := "cert = " + f.Key + " holds a private key and key = " + f.Cert + " holds a certificate: swap them"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, err := LoadMaterial(Files{Cert: f.Cert, Key: f.Key, CA: f.CA, MinVersion: "1.3"}); err != nil {
		t.Errorf("the right way round: %v", err)
	}
}

// FuzzSwapped: the two files cannot both be swapped for each other, and a
// file with no PEM in it is never called swapped.
func FuzzSwapped(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n"),
		[]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("x"), []byte(""))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if Swapped(a, b) && Swapped(b, a) {
			t.Fatal("swapped both ways")
		}
		if Swapped(a, b) && (!pemHas(a, "PRIVATE KEY") || !pemHas(b, "CERTIFICATE")) {
			t.Fatal("swapped without a key in cert and a certificate in key")
		}
	})
}
