//go:build unix

package trust

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
)

// TestReloadSwapBetweenReads: a directory swap (a Secret volume's ..data
// symlink) that lands after the certificate was read and before the key
// was: Reload reads again and loads the new pair instead of failing on a
// certificate and key that do not match.
func TestReloadSwapBetweenReads(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test CA")
	publish := func(gen string, l *testca.Leaf) {
		sub := filepath.Join(dir, gen)
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		testca.WriteFile(t, filepath.Join(sub, "tls.crt"), l.CertPEM)
		testca.WriteFile(t, filepath.Join(sub, "tls.key"), l.KeyPEM)
		testca.WriteFile(t, filepath.Join(sub, "ca.crt"), ca.PEM)
		if err := os.Symlink(gen, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	first := ca.Issue(t, testca.Options{CN: "hub"})
	publish("..1", first)
	f := Files{MinVersion: "1.3"}
	for name, p := range map[string]*string{"tls.crt": &f.Cert, "tls.key": &f.Key, "ca.crt": &f.CA} {
		*p = filepath.Join(dir, name)
		if err := os.Symlink(filepath.Join("..data", name), *p); err != nil {
			t.Fatal(err)
		}
	}
	m, err := LoadMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(m)

	second, third := ca.Issue(t, testca.Options{CN: "hub"}), ca.Issue(t, testca.Options{CN: "hub"})
	publish("..2", second)
	swaps := 0
	afterCertRead = func() {
		if swaps++; swaps == 1 {
			publish("..3", third) // the certificate read was the second's
		}
	}
	defer func() { afterCertRead = nil }()
	changed, err := c.Reload()
	if err != nil || !changed {
		t.Fatalf("reload across a swap: changed %v, %v; want the new pair loaded", changed, err)
	}
	if got := c.Load().Leaf.SerialNumber; got.Cmp(third.Cert.SerialNumber) != 0 {
		t.Fatalf("loaded serial %x, want the last swap's %x", got, third.Cert.SerialNumber)
	}
}
