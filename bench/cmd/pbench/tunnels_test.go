//go:build linux

package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/config"
)

// TestPosternConfigsCarryEveryRoute: the generated configs load as
// Postern configs, with one service per target and one forward per front,
// the PostgreSQL route included when the run has one and left out when not.
func TestPosternConfigsCarryEveryRoute(t *testing.T) {
	dir := t.TempDir()
	c := certs{ca: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "s.crt"), serverKy: filepath.Join(dir, "s.key"),
		clientCert: filepath.Join(dir, "c.crt"), clientKy: filepath.Join(dir, "c.key")}
	targets := routes{http: "127.0.0.1:1001", bulk: "127.0.0.1:1002", pg: "127.0.0.1:1003"}
	fronts := routes{http: "127.0.0.1:2001", bulk: "127.0.0.1:2002", pg: "127.0.0.1:2003"}
	for _, tc := range []struct {
		name            string
		targets, fronts routes
		want            []string
	}{
		{"with pgbench", targets, fronts, []string{"http", "bulk", "pg"}},
		{"without", routes{http: targets.http, bulk: targets.bulk}, routes{http: fronts.http, bulk: fronts.bulk}, []string{"http", "bulk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := config.Parse(filepath.Join(dir, "server.toml"), []byte(posternServerConf(c, "16MiB", "127.0.0.1:3000", tc.targets)))
			if err != nil {
				t.Fatal(err)
			}
			cli, err := config.Parse(filepath.Join(dir, "client.toml"), []byte(posternClientConf(c, "16MiB", "127.0.0.1:3000", tc.fronts)))
			if err != nil {
				t.Fatal(err)
			}
			if len(srv.Services) != len(tc.want) || len(cli.Forwards) != len(tc.want) {
				t.Fatalf("%d services, %d forwards, want %d each", len(srv.Services), len(cli.Forwards), len(tc.want))
			}
			for i, name := range tc.want {
				if s := srv.Services[i]; s.Name != name || string(s.Target) != tc.targets.get(name) {
					t.Errorf("service %d: %q → %q, want %q → %q", i, s.Name, s.Target, name, tc.targets.get(name))
				}
				if f := cli.Forwards[i]; f.Service != name || string(f.Listen) != tc.fronts.get(name) {
					t.Errorf("forward %d: %q → %q, want %q → %q", i, f.Listen, f.Service, tc.fronts.get(name), name)
				}
			}
			if srv.Log.Level != "warn" || cli.Log.Level != "warn" {
				t.Errorf("log levels %q, %q, want warn", srv.Log.Level, cli.Log.Level)
			}
		})
	}
}

func TestFrontsForEveryTarget(t *testing.T) {
	targets := routes{http: "127.0.0.1:1", pg: "127.0.0.1:3"}
	fronts, err := frontsFor(targets)
	if err != nil {
		t.Fatal(err)
	}
	if fronts.http == "" || fronts.pg == "" || fronts.bulk != "" || fronts.http == fronts.pg {
		t.Fatalf("fronts %+v for targets %+v", fronts, targets)
	}
	if !strings.HasPrefix(fronts.http, "127.0.0.1:") {
		t.Errorf("front %q not on loopback", fronts.http)
	}
}

func TestCPUMicrosPer(t *testing.T) {
	if got := cpuMicrosPer(0.5, 5000); got != 100 {
		t.Errorf("0.5 s over 5,000 requests = %v µs each, want 100", got)
	}
}
