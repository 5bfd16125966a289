//go:build linux

package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The pgbench scenario: a throwaway PostgreSQL cluster on loopback, in a
// folder of its own, filled once with `pgbench -i`, then `pgbench -S`
// (select-only: one small query and its answer after another) through
// each tunnel.
const (
	pgRole     = "pbench"   // superuser made by initdb; trust authentication
	pgDatabase = "postgres" // the database initdb makes
	pgScale    = 10         // pgbench -i -s: 1,000,000 accounts, about 160 MB
)

// pgCluster is a running throwaway cluster.
type pgCluster struct {
	bin  string              // folder with initdb, pg_ctl, pgbench
	dir  string              // the cluster's folder: data/, the log, the socket
	addr string              // 127.0.0.1:PORT
	cred *syscall.Credential // the unprivileged user it runs as; nil: as this process
	who  string              // that user's name, for messages
}

// pgBinDir is the newest /usr/lib/postgresql/VERSION/bin that has initdb,
// pg_ctl and pgbench (Debian's layout).
func pgBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	var dirs []string
	for _, m := range matches {
		d := filepath.Dir(m)
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return "", errors.New("no PostgreSQL server in /usr/lib/postgresql/*/bin (initdb, pg_ctl, pgbench); install Debian's postgresql package (bench/bench.sh does)")
	}
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return cmp.Compare(version(a), version(b)) })
	return dirs[len(dirs)-1], nil
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// pgUser is who runs the cluster: PostgreSQL refuses to run as root, so
// as root it is the "postgres" user (or "nobody" where there is none).
func pgUser() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("user %s: uid %q gid %q", name, u.Uid, u.Gid))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name, nil
	}
	return nil, "", fmt.Errorf("no unprivileged user to run PostgreSQL as (it refuses root): %w", errors.Join(errs...))
}

// startPG makes and starts a cluster listening on a free loopback port.
// Its folder is a temporary one of its own (not the work folder, which only
// root may enter), owned by the cluster's user and removed by stop.
func startPG(ctx context.Context) (*pgCluster, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, who, err := pgUser()
	if err != nil {
		return nil, err
	}
	// As root, under /tmp: root's own TMPDIR may be a folder the
	// cluster's user cannot enter.
	parent := ""
	if cred != nil {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "pbench-pg-")
	if err != nil {
		return nil, err
	}
	pg := &pgCluster{bin: bin, dir: dir, cred: cred, who: who}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("give %s to user %s: %w", dir, who, err)
		}
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pg.addr = fmt.Sprintf("127.0.0.1:%d", port)
	data := filepath.Join(dir, "data")
	if err := pg.run(ctx, 2*time.Minute, filepath.Join(bin, "initdb"), "-D", data, "-U", pgRole, "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A benchmark database: nothing needs to survive a crash, and the
	// select-only load writes nothing anyway.
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '%s' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50",
		port, dir)
	if err := pg.run(ctx, 2*time.Minute, filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "postgres.log"),
		"-w", "-t", "60", "-o", opts, "start"); err != nil {
		err = fmt.Errorf("%w; log: %s", err, pg.logTail())
		pg.stop()
		return nil, err
	}
	return pg, nil
}

// run runs a PostgreSQL server program as the cluster's user.
func (pg *pgCluster) run(ctx context.Context, timeout time.Duration, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = pg.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "HOME="+pg.dir)
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		as := ""
		if pg.who != "" {
			as = " as user " + pg.who
		}
		return fmt.Errorf("%s%s: %v: %s", strings.Join(argv, " "), as, err, tailString(string(out), 800))
	}
	return nil
}

// stop stops the cluster and removes its folder.
func (pg *pgCluster) stop() {
	if pg == nil {
		return
	}
	data := filepath.Join(pg.dir, "data")
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err == nil {
		pg.run(context.Background(), time.Minute, filepath.Join(pg.bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
	}
	os.RemoveAll(pg.dir)
}

func (pg *pgCluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(pg.dir, "postgres.log"))
	return tailString(string(b), 800)
}

func tailString(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// pgbench runs the cluster's pgbench (as this process's user: it is only a
// client) against addr, which is the cluster or a tunnel front leading to
// it.
func (pg *pgCluster) pgbench(ctx context.Context, timeout time.Duration, addr string, args ...string) (string, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return "", fmt.Errorf("pgbench: address %q has no port", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv := append([]string{"-h", host, "-p", port, "-U", pgRole}, args...)
	argv = append(argv, pgDatabase)
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, "pgbench"), argv...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgbench %s: %v: %s", strings.Join(argv, " "), err, tailString(string(out), 800))
	}
	return string(out), nil
}

// initialize fills the cluster with pgbench's tables at pgScale, directly.
func (pg *pgCluster) initialize(ctx context.Context) error {
	_, err := pg.pgbench(ctx, 5*time.Minute, pg.addr, "-i", "-q", "-s", strconv.Itoa(pgScale))
	return err
}

// selectOnly runs `pgbench -S` with c clients for d through addr.
func (pg *pgCluster) selectOnly(ctx context.Context, addr string, c int, d time.Duration) (pgResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	threads := min(c, runtime.NumCPU())
	out, err := pg.pgbench(ctx, d+time.Minute, addr, "-S", "-n", "-c", strconv.Itoa(c), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs))
	if err != nil {
		return pgResult{}, err
	}
	res, err := parsePgbench(out)
	if err != nil {
		return pgResult{}, fmt.Errorf("pgbench through %s: %w: %s", addr, err, tailString(out, 800))
	}
	return res, nil
}

// version is the first line of `pgbench --version`.
func (pg *pgCluster) version() string {
	out, _ := exec.Command(filepath.Join(pg.bin, "pgbench"), "--version").Output()
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// pgResult is the summary of one pgbench run.
type pgResult struct {
	tps    float64 // transactions per second, connection setup excluded
	txns   uint64  // transactions processed
	failed uint64  // failed transactions (PostgreSQL 15 and later report them)
}

// parsePgbench reads pgbench's closing summary. Where several lines match
// (an older pgbench prints tps both "including" and "excluding connections
// establishing"), the last one without connection setup counts.
func parsePgbench(out string) (pgResult, error) {
	var res pgResult
	var haveTPS, haveTxns bool
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "tps = "); ok {
			if strings.Contains(v, "including connections establishing") {
				continue
			}
			num, _, _ := strings.Cut(v, " ")
			tps, err := strconv.ParseFloat(num, 64)
			if err != nil || math.IsNaN(tps) || math.IsInf(tps, 0) || tps < 0 {
				return pgResult{}, fmt.Errorf("pgbench output: line %q: tps is not a number of transactions per second", line)
			}
			res.tps, haveTPS = tps, true
		} else if v, ok := strings.CutPrefix(line, "number of transactions actually processed: "); ok {
			// "N" for a timed run, "N/M" for one with a transaction count.
			num, _, _ := strings.Cut(v, "/")
			n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
			if err != nil {
				return pgResult{}, fmt.Errorf("pgbench output: line %q: transactions processed is not a count", line)
			}
			res.txns, haveTxns = n, true
		} else if v, ok := strings.CutPrefix(line, "number of failed transactions: "); ok {
			num, _, _ := strings.Cut(v, " ")
			n, err := strconv.ParseUint(num, 10, 64)
			if err != nil {
				return pgResult{}, fmt.Errorf("pgbench output: line %q: failed transactions is not a count", line)
			}
			res.failed = n
		}
	}
	if err := sc.Err(); err != nil {
		return pgResult{}, fmt.Errorf("pgbench output: %w", err)
	}
	if !haveTPS {
		return pgResult{}, errors.New(`pgbench output: no "tps = " line`)
	}
	if !haveTxns {
		return pgResult{}, errors.New(`pgbench output: no "number of transactions actually processed" line`)
	}
	return res, nil
}
