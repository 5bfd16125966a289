//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// makeCerts makes a throwaway CA and ECDSA P-256 server and client
// certificates with `postern pki`, shared by every tunnel.
func makeCerts(bin, dir string) (certs, error) {
	ca := filepath.Join(dir, "ca")
	steps := [][]string{
		{"pki", "init", "--dir", ca, "--key-type", "ecdsa-p256", "--cn", "Postern bench CA"},
		{"pki", "issue", "--dir", ca, "--usage", "server", "--dns", serverName, "--ip", "127.0.0.1",
			"--key-type", "ecdsa-p256", "--validity", "365d", "--out", filepath.Join(dir, "server")},
		{"pki", "issue", "--dir", ca, "--usage", "client", "--cn", "bench-client",
			"--key-type", "ecdsa-p256", "--validity", "365d", "--out", filepath.Join(dir, "client")},
	}
	for _, args := range steps {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			return certs{}, fmt.Errorf("postern %v: %v\n%s", args[:2], err, out)
		}
	}
	c := certs{
		ca:         filepath.Join(ca, "ca.crt"),
		serverCert: filepath.Join(dir, "server.crt"), serverKy: filepath.Join(dir, "server.key"),
		clientCert: filepath.Join(dir, "client.crt"), clientKy: filepath.Join(dir, "client.key"),
		serverPEM: filepath.Join(dir, "server.pem"), clientPEM: filepath.Join(dir, "client.pem"),
	}
	for _, j := range [][3]string{{c.serverCert, c.serverKy, c.serverPEM}, {c.clientCert, c.clientKy, c.clientPEM}} {
		crt, err := os.ReadFile(j[0])
		if err != nil {
			return certs{}, err
		}
		key, err := os.ReadFile(j[1])
		if err != nil {
			return certs{}, err
		}
		if err := os.WriteFile(j[2], append(crt, key...), 0o600); err != nil {
			return certs{}, err
		}
	}
	return c, nil
}
