package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
)

type statusFlags struct {
	config string
	json   bool
}

// cmdStatus prints the running agent's tunnels, forwards, services and
// recent refusals, from its control socket or [admin] endpoint.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var f statusFlags
	fs := flag.NewFlagSet("postern status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "c", "", "config `FILE` of the running agent (default "+config.DefaultPath()+")")
	fs.BoolVar(&f.json, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: postern status [-c FILE] [--json]")
		return 2
	}
	notice := stdout
	if f.json {
		notice = stderr // stdout is the JSON document only
	}
	c, err := controlFor(f.config, "status", notice)
	if err != nil {
		fmt.Fprintf(stderr, "postern status: %v\n", err)
		return 1
	}
	var st agent.Status
	if _, err := c.do(http.MethodGet, "/status", &st); err != nil {
		fmt.Fprintf(stderr, "postern status: %v\n", err)
		return 1
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	printStatus(stdout, st, time.Now())
	return 0
}

// cmdReload asks the running agent to reload and prints what it did.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	var path string
	fs := flag.NewFlagSet("postern reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "c", "", "config `FILE` of the running agent (default "+config.DefaultPath()+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: postern reload [-c FILE]")
		return 2
	}
	c, err := controlFor(path, "reload", stdout)
	if err != nil {
		fmt.Fprintf(stderr, "postern reload: %v\n", err)
		return 1
	}
	var res agent.ReloadResponse
	code, err := c.do(http.MethodPost, "/reload", &res)
	if err != nil && code != http.StatusUnprocessableEntity {
		fmt.Fprintf(stderr, "postern reload: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "postern reload: agent %s (%s)\n", res.Agent, c.where)
	for _, line := range strings.Split(res.Result, "\n") {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
	if !res.OK {
		fmt.Fprintf(stderr, "postern reload: %s\n", res.Err)
		return 1
	}
	return 0
}

// control is a way to the running agent: its control socket, or its
// [admin] endpoint.
type control struct {
	http  *http.Client
	base  string // http://postern or http://ADMIN-ADDRESS
	where string // for messages: "socket PATH" or "admin endpoint ADDR"
}

// controlFor finds the running agent of the config file: the first control
// socket whose agent reports that file, else the config's [admin] endpoint.
func controlFor(flagValue, command string, notice io.Writer) (*control, error) {
	path := configPath(flagValue, command, notice)
	want := agent.ConfigPathOf(path)
	var tried []string
	for _, sock := range agent.ControlSocketPaths(path) {
		c := &control{base: "http://postern", where: "socket " + sock, http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}},
		}}
		var who struct{ Config string }
		if _, err := c.do(http.MethodGet, "/config", &who); err != nil {
			var op *net.OpError
			if errors.As(err, &op) {
				err = op.Err
			}
			tried = append(tried, fmt.Sprintf("socket %s: %v", sock, err))
			continue
		}
		if who.Config != want {
			tried = append(tried, fmt.Sprintf("socket %s: the agent there runs %s", sock, who.Config))
			continue
		}
		return c, nil
	}
	cfg, err := loadConfig(path, flagValue == "")
	if err != nil {
		return nil, fmt.Errorf("%s; and %w", strings.Join(tried, "; "), err)
	}
	if cfg.Admin.Listen == "" {
		return nil, fmt.Errorf("no running agent of %s answers: %s; and the config has no [admin] listen: is the agent running with this config?",
			want, strings.Join(tried, "; "))
	}
	addr := adminDialAddr(string(cfg.Admin.Listen))
	return &control{base: "http://" + addr, where: "admin endpoint " + addr, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// adminDialAddr is the address to reach an [admin] listen address from
// this machine: a wildcard host becomes loopback.
func adminDialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

// do sends a request and decodes the JSON answer into out. An answer that
// is not 200 is an error (out is still decoded when it is JSON).
func (c *control) do(method, path string, out any) (int, error) {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		return 0, fmt.Errorf("%s %s via %s: %w", method, path, c.where, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s via %s: read the answer: %w", method, path, c.where, err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s via %s: %w", method, path, c.where, err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s %s via %s: %s: %s", method, path, c.where, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp.StatusCode, nil
}

// printStatus writes the status as tables for people.
func printStatus(w io.Writer, st agent.Status, now time.Time) {
	state := "running"
	if st.Draining {
		state = "shutting down"
	}
	fmt.Fprintf(w, "agent %s (%s), %s for %s\n", st.Agent, st.Config, state, ago(now, st.Since))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nTUNNELS (%d)\n", len(st.Tunnels))
	if len(st.Tunnels) > 0 {
		fmt.Fprintln(tw, "PEER\tVIA\tADDRESS\tUP\tSTREAMS\tSENT\tRECEIVED\tCERT EXPIRES\tTLS")
	}
	for _, t := range st.Tunnels {
		via := t.Client
		if via == "" {
			via = "(accepted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", t.Peer, via, t.Addr, ago(now, t.Since), t.Streams,
			bytesString(t.Sent), bytesString(t.Received), expires(now, t.NotAfter), t.TLSVersion)
	}
	fmt.Fprintf(tw, "\nFORWARDS (%d)\n", len(st.Forwards))
	if len(st.Forwards) > 0 {
		fmt.Fprintln(tw, "LISTEN\tSERVICE\tVIA\tOPEN\tTOTAL\tLAST ERROR")
	}
	for _, f := range st.Forwards {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", f.Listen, f.Service, f.Via, f.Open, f.Total, lastErr(now, f.LastErr))
	}
	fmt.Fprintf(tw, "\nSERVICES (%d)\n", len(st.Services))
	if len(st.Services) > 0 {
		fmt.Fprintln(tw, "NAME\tTARGET\tOPEN\tTOTAL\tLAST ERROR")
	}
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.Name, targetCell(s), s.Open, s.Total, lastErr(now, s.LastErr))
	}
	fmt.Fprintf(tw, "\nREFUSED HANDSHAKES (%d)\n", len(st.Refusals))
	if len(st.Refusals) > 0 {
		fmt.Fprintln(tw, "ADDRESS\tCAUSE\tCOUNT\tLAST\tREASON")
	}
	for _, r := range st.Refusals {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s ago\t%s\n", r.Addr, r.Cause, r.Count, ago(now, r.Last), r.Reason)
	}
	printRenewals(tw, st.Renewals, now)
	tw.Flush()
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "<1s"
	}
	return d.Round(time.Second).String()
}

func expires(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	days := t.Sub(now).Hours() / 24
	if days < 0 {
		return fmt.Sprintf("%s (EXPIRED)", t.UTC().Format("2006-01-02"))
	}
	return fmt.Sprintf("%s (%.0fd)", t.UTC().Format("2006-01-02"), days)
}

func lastErr(now time.Time, e *agent.LastError) string {
	if e == nil {
		return "-"
	}
	return fmt.Sprintf("%s ago: %s", ago(now, e.Time), e.Err)
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// targetCell is a service's TARGET column: the target its latest stream
// used, with how many of several targets are up, or "(down)" for a lone
// target marked down.
func targetCell(s agent.ServiceStatus) string {
	up := 0
	for _, t := range s.Targets {
		if t.Up {
			up++
		}
	}
	switch {
	case len(s.Targets) > 1:
		return fmt.Sprintf("%s (%d of %d up)", s.Target, up, len(s.Targets))
	case len(s.Targets) == 1 && up == 0:
		return s.Target + " (down)"
	}
	return s.Target
}
