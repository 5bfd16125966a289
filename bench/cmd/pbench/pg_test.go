//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// pgbench15 is what PostgreSQL 15's pgbench prints for a timed -S run.
const pgbench15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 92387
number of failed transactions: 0 (0.000%)
latency average = 0.432 ms
initial connection time = 12.345 ms
tps = 18477.404912 (without initial connection time)
`

// pgbench13 is the summary of PostgreSQL 13 and older: tps with and
// without connection setup, no failed-transaction count.
const pgbench13 = `starting vacuum...end.
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 1
number of threads: 1
duration: 5 s
number of transactions actually processed: 38186
latency average = 0.131 ms
tps = 7637.100000 (including connections establishing)
tps = 7640.250000 (excluding connections establishing)
`

func TestParsePgbench(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want pgResult
		err  string
	}{
		{"PostgreSQL 15", pgbench15, pgResult{tps: 18477.404912, txns: 92387}, ""},
		{"PostgreSQL 13 takes the tps without connections", pgbench13, pgResult{tps: 7640.25, txns: 38186}, ""},
		{"transaction count run", "number of transactions actually processed: 100/100\ntps = 50.5 (without initial connection time)\n",
			pgResult{tps: 50.5, txns: 100}, ""},
		{"failed transactions", strings.Replace(pgbench15, "failed transactions: 0 (0.000%)", "failed transactions: 12 (0.013%)", 1),
			pgResult{tps: 18477.404912, txns: 92387, failed: 12}, ""},
		{"CRLF and indentation", strings.ReplaceAll(pgbench15, "\n", "\r\n  "), pgResult{tps: 18477.404912, txns: 92387}, ""},
		{"connection refused", "pgbench: error: connection to server at \"127.0.0.1\", port 5 failed: Connection refused\npgbench: error: could not create connection for client 0\n",
			pgResult{}, `no "tps = " line`},
		{"aborted run without a count", "tps = 10.0 (without initial connection time)\n", pgResult{}, "no \"number of transactions"},
		{"tps not a number", "number of transactions actually processed: 5\ntps = fast (without initial connection time)\n", pgResult{}, "tps is not a number"},
		{"tps NaN", "number of transactions actually processed: 5\ntps = NaN (without initial connection time)\n", pgResult{}, "tps is not a number"},
		{"tps negative", "number of transactions actually processed: 5\ntps = -3 (without initial connection time)\n", pgResult{}, "tps is not a number"},
		{"count not a number", "number of transactions actually processed: many\ntps = 3\n", pgResult{}, "not a count"},
		{"empty", "", pgResult{}, `no "tps = " line`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePgbench(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parsePgbench = %+v, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parsePgbench = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// FuzzParsePgbench checks two properties: whatever comes before it, a
// pgbench summary at the end of the output is what the parser reads back;
// and any output it accepts has a finite, non-negative tps that came from a
// "tps = " line.
func FuzzParsePgbench(f *testing.F) {
	f.Add("", 18477.404912, uint64(92387), uint64(0))
	f.Add("starting vacuum...end.\ntps = 1 (including connections establishing)", 7640.25, uint64(38186), uint64(3))
	f.Add("tps = 99 (without initial connection time)\nnumber of transactions actually processed: 7/7", 0.5, uint64(1), uint64(0))
	f.Add("pgbench: error: connection refused\n\xff\x00", 1e9, uint64(math.MaxUint64), uint64(1))
	f.Fuzz(func(t *testing.T, before string, tps float64, txns, failed uint64) {
		// Property 1: anything before the summary, then the summary.
		if !math.IsNaN(tps) && !math.IsInf(tps, 0) && tps >= 0 && len(before) < 1<<16 {
			summary := fmt.Sprintf("number of transactions actually processed: %d\nnumber of failed transactions: %d (0.000%%)\nlatency average = 0.1 ms\ntps = %f (without initial connection time)\n",
				txns, failed, tps)
			in := before + "\n" + summary
			got, err := parsePgbench(in)
			switch {
			case err != nil:
				// Only a malformed line in before may spoil the output.
				if !strings.Contains(err.Error(), "pgbench output: line") && !strings.Contains(err.Error(), "token too long") {
					t.Fatalf("output ending in a valid summary refused: %v", err)
				}
			case got.txns != txns || got.failed != failed || math.Abs(got.tps-tps) > 1e-6*math.Max(1, tps):
				t.Fatalf("parsed %+v from output ending in\n%s", got, summary)
			}
		}
		// Property 2: accepted output has a sound tps from a "tps = " line.
		got, err := parsePgbench(before)
		if err == nil {
			if math.IsNaN(got.tps) || math.IsInf(got.tps, 0) || got.tps < 0 {
				t.Fatalf("accepted tps %v", got.tps)
			}
			if !strings.Contains(before, "tps = ") || !strings.Contains(before, "number of transactions actually processed: ") {
				t.Fatalf("accepted output without a tps and a count line: %q", before)
			}
		}
	})
}

// TestPostgresCluster starts the throwaway cluster the pgbench scenario
// uses, fills it, runs pgbench -S against it and stops it: the whole
// scenario without a tunnel.
func TestPostgresCluster(t *testing.T) {
	if _, err := pgBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs PostgreSQL for this test: %v", err)
		}
		t.Skipf("skipped: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg, err := startPG(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			pg.stop()
		}
	}()
	if os.Geteuid() == 0 && (pg.cred == nil || pg.cred.Uid == 0) {
		t.Errorf("running as root, but the cluster's user is %+v", pg.cred)
	}
	if err := pg.initialize(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := pg.selectOnly(ctx, pg.addr, 2, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.tps <= 0 || res.txns == 0 || res.failed != 0 {
		t.Errorf("pgbench -S: %+v", res)
	}
	if v := pg.version(); !strings.HasPrefix(v, "pgbench (") {
		t.Errorf("version %q", v)
	}
	dir := pg.dir
	pg.stop()
	stopped = true
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster folder %s still there after stop: %v", dir, err)
	}
	if c, err := net.DialTimeout("tcp", pg.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on %s after stop", pg.addr)
	}
}

func TestPgbenchRejectsAddressWithoutPort(t *testing.T) {
	pg := &pgCluster{bin: "/nonexistent"}
	if _, err := pg.pgbench(context.Background(), time.Second, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "no port") {
		t.Fatalf("err = %v", err)
	}
}
