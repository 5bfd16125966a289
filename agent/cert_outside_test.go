package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// Certificates renewed by outside tools reach the running agent through
// the files: a Kubernetes Secret volume swaps a `..data` symlink to a new
// directory in one rename; a renewal client writes a temporary file and
// renames it over the certificate, then the key. Both are picked up by the
// poll while a stream keeps running (make-before-break).

// secretVolume lays files out the way the kubelet writes a Secret volume:
// NAME → ..data/NAME, ..data → ..TIMESTAMP (a directory), and an update
// writes a new directory, points ..data_tmp at it, renames ..data_tmp over
// ..data and removes the old directory.
type secretVolume struct {
	dir string
	gen int
	cur string // the directory ..data points at
}

func (v *secretVolume) publish(t testing.TB, files map[string][]byte) {
	t.Helper()
	v.gen++
	ts := fmt.Sprintf("..2026_12_01_02_00_00.%d", v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		testca.WriteFile(t, filepath.Join(v.dir, ts, name), data)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.cur != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.cur)); err != nil {
			t.Fatal(err)
		}
	}
	v.cur = ts
}

// renameOver writes data next to path and renames it into place.
func renameOver(t testing.TB, path string, data []byte) {
	t.Helper()
	testca.WriteFile(t, path+".tmp", data)
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadSecretVolumeSwap: the hub's certificate, key and CA bundle are
// a Secret volume's symlinks. A swap of ..data while a stream transfers is
// picked up without a restart or an error; the stream completes and the
// next handshake presents the new certificate.
func TestReloadSecretVolumeSwap(t *testing.T) {
	release := make(chan struct{})
	slow := twoPartService(t, release)
	dir := t.TempDir()
	p := newPKI(t, dir)
	vol := &secretVolume{dir: filepath.Join(dir, "secret")}
	if err := os.Mkdir(vol.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	first := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	vol.publish(t, map[string][]byte{"tls.crt": first.CertPEM, "tls.key": first.KeyPEM, "ca.crt": p.ca.PEM})
	p.hub = testca.Files{Cert: filepath.Join(vol.dir, "tls.crt"), Key: filepath.Join(vol.dir, "tls.key"), CA: filepath.Join(vol.dir, "ca.crt")}

	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, serviceTOML("slow", slow, "*")), `reload_interval = "50ms"`))
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, addr, "slow"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	if got := serverSerial(t, p, addr); got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("hub presents serial %x, want %x", got, first.Cert.SerialNumber)
	}

	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, len("part one;"))); err != nil {
		t.Fatal(err)
	}
	serial := first.Cert.SerialNumber
	for range 2 { // twice: the second swap removes the directory the first one made
		next := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
		vol.publish(t, map[string][]byte{"tls.crt": next.CertPEM, "tls.key": next.KeyPEM, "ca.crt": p.ca.PEM})
		hub.log.WaitFor(t, 5*time.Second, "reloaded certificate material", "serial "+next.Cert.SerialNumber.Text(16), "was serial "+serial.Text(16))
		if got := serverSerial(t, p, addr); got.Cmp(next.Cert.SerialNumber) != 0 {
			t.Fatalf("new handshake presents serial %x, want the new %x", got, next.Cert.SerialNumber)
		}
		serial = next.Cert.SerialNumber
	}

	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(c); err != nil || string(rest) != "part two" {
		t.Fatalf("stream across the swaps: got %q, %v; want the rest and a clean end", rest, err)
	}
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("the site connected %d times, want once: a swap must not drop the tunnel", n)
	}
	if n := countLines(hub.log.String(), "certificate reload failed"); n != 0 {
		t.Errorf("an atomic directory swap logged %d reload failures, want none", n)
	}
}

// TestReloadRenameOver: a renewal client renames a new certificate over
// the old one, and a moment later the new key over the old key. The poll
// that sees the new certificate with the old key keeps the old material
// and says nothing above debug; the next poll loads the pair. A live
// stream keeps going, and the next handshake presents the new serial.
func TestReloadRenameOver(t *testing.T) {
	release := make(chan struct{})
	slow := twoPartService(t, release)
	dir := t.TempDir()
	p := newPKI(t, dir)
	// A long enough interval that the key is renamed before the next poll
	// once the in-between state has been seen.
	hub := start(t, dir, "hub", withServerKeys(hubTOML(p, serviceTOML("slow", slow, "*")), `reload_interval = "400ms"`))
	addr := hub.ServerAddrs()[0].String()
	site := start(t, dir, "site", siteTOML(p, addr, "slow"))
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")
	oldSerial := serverSerial(t, p, addr)

	c := testnet.Dial(t, site.ForwardAddrs()[0].String())
	c.CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, len("part one;"))); err != nil {
		t.Fatal(err)
	}

	next := p.ca.Issue(t, testca.Options{CN: "hub", DNS: []string{"hub.test"}, IPs: []string{"127.0.0.1"}})
	renameOver(t, p.hub.Cert, next.CertPEM)
	hub.log.WaitFor(t, 5*time.Second, "certificate files do not load yet; checking again at the next poll", "does not match certificate")
	if got := serverSerial(t, p, addr); got.Cmp(oldSerial) != 0 {
		t.Fatalf("with the new certificate and the old key on disk the hub presents %x, want the old %x", got, oldSerial)
	}
	renameOver(t, p.hub.Key, next.KeyPEM)
	hub.log.WaitFor(t, 5*time.Second, "reloaded certificate material", "serial "+next.Cert.SerialNumber.Text(16), "was serial "+oldSerial.Text(16))
	if got := serverSerial(t, p, addr); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("new handshake presents serial %x, want the new %x", got, next.Cert.SerialNumber)
	}

	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(c); err != nil || string(rest) != "part two" {
		t.Fatalf("stream across the renames: got %q, %v; want the rest and a clean end", rest, err)
	}
	if n := countLines(hub.log.String(), "certificate reload failed"); n != 0 {
		t.Errorf("the in-between state was logged as a failure %d times, want none", n)
	}
	if n := countLines(site.log.String(), "tunnel connected", "tunnel=hub"); n != 1 {
		t.Errorf("the site connected %d times, want once", n)
	}
}
