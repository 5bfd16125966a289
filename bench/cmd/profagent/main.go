// Command profagent runs a Postern agent like `postern run -c FILE` and
// profiles it: CPU and allocations for the whole run, written when it stops
// (SIGINT or SIGTERM). Point pbench at it to profile Postern under the
// benchmark's load:
//
//	go build -o bench/.bin/profagent ./bench/cmd/profagent
//	PROFAGENT_DIR=/tmp/prof bench/.bin/pbench run -bin bench/.bin/profagent -tunnels postern -scenarios keepalive-c1
//	go tool pprof -top bench/.bin/profagent /tmp/prof/cpu-<pid>.prof
//
// While it runs, it serves net/http/pprof and /memstats on a loopback port
// written to PROFAGENT_DIR/debug-NAME.addr (NAME is the agent's name).
//
// The `pki` and `version` commands are passed to bench/.bin/postern, so
// pbench can use this binary in its place.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] != "run" {
		// pki, version: the real binary next to this one does those.
		real := filepath.Join(filepath.Dir(os.Args[0]), "postern")
		cmd := exec.Command(real, os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			os.Exit(1)
		}
		return
	}
	fs := flag.NewFlagSet("profagent run", flag.ExitOnError)
	path := fs.String("c", "", "config `FILE`")
	fs.Parse(os.Args[2:])
	if err := run(*path); err != nil {
		fmt.Fprintf(os.Stderr, "profagent: %v\n", err)
		os.Exit(1)
	}
}

func run(path string) error {
	dir := os.Getenv("PROFAGENT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := agent.New(cfg, log, agent.Options{})
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%d", cfg.Name, os.Getpid())
	if err := serveDebug(filepath.Join(dir, "debug-"+cfg.Name+".addr")); err != nil {
		return err
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu-"+name+".prof"))
	if err != nil {
		return err
	}
	runtime.MemProfileRate = 4096
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runErr := a.Run(ctx)
	pprof.StopCPUProfile()
	cpu.Close()
	mem, err := os.Create(filepath.Join(dir, "allocs-"+name+".prof"))
	if err != nil {
		return err
	}
	defer mem.Close()
	if err := pprof.Lookup("allocs").WriteTo(mem, 0); err != nil {
		return err
	}
	return runErr
}

// serveDebug serves pprof and the runtime's memory statistics on a free
// loopback port and writes the address to addrFile.
func serveDebug(addrFile string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	http.HandleFunc("/memstats", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "goroutines %d\nheap_inuse %d\nheap_alloc %d\nheap_sys %d\nheap_released %d\nstack_inuse %d\nsys %d\nmspan_inuse %d\ngc_sys %d\nother_sys %d\n",
			runtime.NumGoroutine(), m.HeapInuse, m.HeapAlloc, m.HeapSys, m.HeapReleased, m.StackInuse, m.Sys, m.MSpanInuse, m.GCSys, m.OtherSys)
	})
	go http.Serve(ln, nil)
	return os.WriteFile(addrFile, []byte(ln.Addr().String()), 0o644)
}
