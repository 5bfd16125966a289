// Command postern is a Layer-4 TCP tunnel for legacy applications: it carries
// plaintext TCP over one multiplexed, mutually authenticated TLS tunnel.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/postern-tunnel/postern/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one `postern` subcommand. It returns the process exit status.
type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run -c FILE            run the agent in the foreground", cmdRun},
		{"check", "check [-c FILE]        validate the config and its files (default: " + config.DefaultPath() + ")", cmdCheck},
		{"status", "status [-c FILE] [--json]\n                                 tunnels, streams, bytes, expiry and refusals of the running agent", cmdStatus},
		{"reload", "reload [-c FILE]       reload the running agent's certificate files, and say what changed", cmdReload},
		{"service", "service ACTION -c FILE install|uninstall|start|stop|restart|status", cmdService},
		{"pki", "pki ACTION ...         a small private CA: init|issue|request|sign|invite|revoke|crl|show", cmdPKI},
		{"enroll", "enroll --token TOKEN -c FILE\n                                 new site: make the key here, get the certificate from the hub's invitation", cmdEnroll},
		{"demo", "demo                   both agents and a sample service on loopback", cmdDemo},
		{"version", "version                print the version", cmdVersion},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "postern: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: postern COMMAND [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  postern %s\n", c.usage)
	}
}
