package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// What `postern pki init --hub HOST:PORT` writes in the CA folder beside
// the CA: the hub's own server certificate and key, and the address sites
// dial, which `postern pki invite` takes when it is given no --hub.
const (
	HubCertFile = "hub.crt"  // the hub's certificate chain (PEM), its [tls] cert
	HubKeyFile  = "hub.key"  // its private key (PKCS#8 PEM, mode 0600), its [tls] key
	HubFile     = "hub.addr" // HOST:PORT sites dial, one line
)

// HubNames are the names of the server certificate for a hub that sites
// reach at addr (HOST:PORT): HOST as an IP address or as a DNS name, which
// is also its common name.
func HubNames(addr string) (Names, error) {
	if err := checkHubAddress(addr); err != nil || len(addr) > maxTokenField {
		return Names{}, fmt.Errorf("hub address %q: give the host:port sites dial, like hub.example.com:7443", addr)
	}
	host, _, _ := net.SplitHostPort(addr)
	if strings.Contains(host, "*") {
		return Names{}, fmt.Errorf("hub address %q: a wildcard is not a host sites can dial", addr)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		return Names{CommonName: ip.String(), IPAddresses: []net.IP{ip}}, nil
	}
	n := Names{DNSNames: []string{host}}.withDefaults()
	if err := n.validate(); err != nil {
		return Names{}, fmt.Errorf("hub address %q: %w", addr, err)
	}
	return n, nil
}

// SaveHub records addr as the address sites dial to reach the hub that
// signs with the CA in dir (HubFile). It never replaces a record.
func SaveHub(dir, addr string) error {
	if _, err := HubNames(addr); err != nil {
		return err
	}
	path := filepath.Join(dir, HubFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(addr + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadHub returns the address SaveHub recorded in dir, or "" when there
// is none.
func ReadHub(dir string) (string, error) {
	path := filepath.Join(dir, HubFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	addr := strings.TrimSpace(string(data))
	if err := checkHubAddress(addr); err != nil {
		return "", fmt.Errorf("%s: %w (write HOST:PORT in it, or give --hub)", path, err)
	}
	return addr, nil
}
