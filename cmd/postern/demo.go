package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
)

type demoFlags struct {
	port     int
	selftest bool // make one request through the tunnel, print it, exit
}

// cmdDemo runs a hub agent, a site agent and a small "legacy" HTTP service
// on loopback, with a throwaway CA in a temporary folder.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	var f demoFlags
	fs := flag.NewFlagSet("postern demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.port, "port", 8080, "local `PORT` for the forward (another free port is used if it is taken)")
	fs.BoolVar(&f.selftest, "selftest", false, "make one request through the tunnel, print the answer and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop, _ := signalContext(stderr)
	defer stop()
	if err := runDemo(ctx, f, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "postern demo: %v\n", err)
		return 1
	}
	return 0
}

func runDemo(ctx context.Context, f demoFlags, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "postern-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeDemoPKI(dir); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	legacy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	web := &http.Server{Handler: http.HandlerFunc(legacyApp), ReadHeaderTimeout: 10 * time.Second}
	go web.Serve(legacy)
	defer web.Close()

	hubCfg := fmt.Sprintf(demoHub, legacy.Addr())
	hub, err := startDemoAgent(dir, "hub.toml", hubCfg, log.With("demo", "hub"))
	if err != nil {
		return err
	}
	forward := fmt.Sprintf("127.0.0.1:%d", f.port)
	if ln, err := net.Listen("tcp", forward); err != nil {
		forward = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	siteCfg := fmt.Sprintf(demoSite, hub.ServerAddrs()[0], forward)
	site, err := startDemoAgent(dir, "site.toml", siteCfg, log.With("demo", "site"))
	if err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, 2)
	for _, a := range []*agent.Agent{hub, site} {
		go func() {
			a.Run(runCtx)
			done <- struct{}{}
		}()
	}
	url := fmt.Sprintf("http://%s/", site.ForwardAddrs()[0])
	if f.selftest {
		err = demoRequest(ctx, url, stdout)
	} else {
		fmt.Fprintf(stdout, `
Postern demo is running. Throwaway CA, certificates and configs: %s

  legacy app (plain HTTP)  %s
  hub agent  (tunnel)      %s   config %s
  site agent (forward)     %s   config %s

The site agent carries each connection to its forward through one mutual-TLS
tunnel to the hub, which connects to the legacy app. Try:

  curl %s

Press Ctrl-C to stop.
`, dir, legacy.Addr(), hub.ServerAddrs()[0], filepath.Join(dir, "hub.toml"),
			site.ForwardAddrs()[0], filepath.Join(dir, "site.toml"), url)
		<-ctx.Done()
	}
	cancel()
	<-done
	<-done
	return err
}

func startDemoAgent(dir, name, toml string, log *slog.Logger) (*agent.Agent, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return agent.New(cfg, log, agent.Options{})
}

// demoRequest fetches url through the tunnel, retrying while the tunnel
// comes up.
func demoRequest(ctx context.Context, url string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("request through the tunnel: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "GET %s → %s\n%s", url, resp.Status, body)
	if resp.StatusCode != http.StatusOK {
		return errors.New("unexpected status " + resp.Status)
	}
	return nil
}

func legacyApp(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "Hello from the legacy app.\nThis answer travelled back through a Postern tunnel.\n"+
		"The app saw the connection come from %s (the hub agent), and got: %s %s\n", r.RemoteAddr, r.Method, r.URL.Path)
}

func writeDemoPKI(dir string) error {
	ca, err := pki.NewCA(pki.InitOptions{CommonName: "Postern Demo CA"})
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": pki.CertPEM(ca.Cert)}
	for _, leaf := range []struct {
		name  string
		names pki.Names
	}{
		{"hub", pki.Names{CommonName: "hub", DNSNames: []string{"hub.demo.internal"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}},
		{"site", pki.Names{CommonName: "site-a", DNSNames: []string{"site-a.demo.internal"}}},
	} {
		certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{Names: leaf.names, Usage: pki.UsageBoth})
		if err != nil {
			return err
		}
		files[leaf.name+".crt"], files[leaf.name+".key"] = certPEM, keyPEM
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

var demoHub = strings.TrimLeft(`
name = "hub"
shutdown_timeout = "2s"

[tls]
cert = "hub.crt"
key  = "hub.key"
ca   = "ca.crt"

[[server]]
listen = "127.0.0.1:0"

[[service]]
name   = "legacy-web"
target = "%s"
allow  = ["dns:site-a.demo.internal"]
`, "\n")

var demoSite = strings.TrimLeft(`
name = "site-a"
shutdown_timeout = "2s"

[tls]
cert = "site.crt"
key  = "site.key"
ca   = "ca.crt"

[[client]]
name = "hub"
servers = ["%s"]
server_name = "hub.demo.internal"

[[forward]]
listen  = "%s"
service = "legacy-web"
via     = "hub"
`, "\n")
