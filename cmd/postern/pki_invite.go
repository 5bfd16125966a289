package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
)

type pkiInviteFlags struct {
	dir      string
	config   string
	hub      string
	names    pkiNameFlags
	usage    pkiUsageFlag
	ttl      pkiDurationFlag
	validity pkiDurationFlag
}

// pkiInvite is `postern pki invite`: it records a one-time invitation in
// the CA folder and prints its token, alone, on stdout (so a script can
// capture it); what it means goes to stderr. Only ca.crt is read.
func pkiInvite(env pkiEnv, args []string) int {
	f := pkiInviteFlags{ttl: pkiDurationFlag(pki.DefaultInviteTTL)}
	fs := pkiFlags("invite", "--dns NAME [--uri URI] [--cn CN] [--ip IP] [--ttl 24h] [--validity 90d] [--hub HOST:PORT] [--dir pki | -c HUB.toml]", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder` the hub signs with ([ca] dir)")
	fs.StringVar(&f.config, "c", "", "the hub's config `FILE`: its [ca] dir, identities and validity apply")
	fs.StringVar(&f.hub, "hub", "", "`HOST:PORT` of the hub's [[server]] listener the site dials; its certificate must carry HOST (default: what `pki init --hub` recorded in the CA folder's "+pki.HubFile+")")
	f.names.register(fs)
	fs.Var(&f.usage, "usage", "what the certificate may do: client (default: the site dials the hub), server or both")
	fs.Var(&f.ttl, "ttl", "how long the token may be redeemed (`DURATION`)")
	fs.Var(&f.validity, "validity", "how long the site's certificate is valid (`DURATION`; default [ca] validity or 90d)")
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	var cfg *config.Config
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return pkiFail(env, "invite", err)
		}
		if cfg.CA == nil {
			return pkiFail(env, "invite", fmt.Errorf("%s has no [ca] section: the hub must sign for its sites (add [ca] dir = \"pki\")", f.config))
		}
		if !pkiFlagSet(fs, "dir") {
			f.dir = cfg.CA.Dir
		}
	}
	if f.hub == "" {
		hub, err := pki.ReadHub(f.dir)
		if err != nil {
			return pkiFail(env, "invite", err)
		}
		if hub == "" {
			return pkiUsageFail(env, fs, fmt.Sprintf("--hub HOST:PORT is required: where the new site reaches this hub (%s holds none: `postern pki init --hub` records it)",
				filepath.Join(f.dir, pki.HubFile)))
		}
		f.hub = hub
	}
	opts := pki.InviteOptions{Names: f.names.names(), Usage: pki.Usage(f.usage), TTL: time.Duration(f.ttl), Validity: time.Duration(f.validity), Hub: f.hub}
	if cfg != nil {
		opts.Bound, opts.MaxValidity = cfg.CA.Identities, cfg.CA.Validity.D()
		if msg := pkiHubNameMismatch(cfg, f.hub); msg != "" {
			fmt.Fprintln(env.stderr, "warning: "+msg)
		}
		if opts.Validity == 0 {
			opts.Validity = opts.MaxValidity
		}
	}
	tok, inv, err := pki.Invite(f.dir, opts)
	if errors.Is(err, iofs.ErrNotExist) {
		err = fmt.Errorf("no CA in %s (%v): create one with `postern pki init --dir %s`, or point --dir (or -c) at the hub's CA folder", f.dir, err, f.dir)
	}
	if err != nil {
		return pkiFail(env, "invite", err)
	}
	fmt.Fprintln(env.stdout, tok.String())
	w := env.stderr
	fmt.Fprintf(w, "invitation %s for %s: redeem once before %s (%s certificate, valid %s)\n", inv.ID, strings.Join(inv.Identities, ", "), pkiDate(inv.ExpiresAt), inv.Usage, pkiValidity(inv.Validity))
	fmt.Fprintf(w, "on the new site: postern enroll --token TOKEN -c site.toml   (the token is a secret: send it by a private channel)\n")
	fmt.Fprintf(w, "the hub at %s must run with [ca] dir = %q to redeem it\n", inv.Hub, f.dir)
	return 0
}

func pkiFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// pkiValidity writes a recorded Go duration the way config keys do ("90d").
func pkiValidity(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	return config.FormatDuration(d)
}

// pkiHubNameMismatch says when no [[server]] certificate of the hub carries
// the host sites will dial: each would refuse the hub at enrollment.
func pkiHubNameMismatch(cfg *config.Config, hub string) string {
	host, _, err := net.SplitHostPort(hub)
	if err != nil {
		return ""
	}
	var names []string
	for _, s := range cfg.Servers {
		certs, err := trust.LoadCACerts(s.TLS.Cert)
		if err != nil {
			return "" // pkcs11:, [acme] not obtained yet, ...: check says more
		}
		if certs[0].VerifyHostname(host) == nil {
			return ""
		}
		names = append(names, fmt.Sprintf("%s carries %s", s.TLS.Cert, strings.Join(append(certs[0].DNSNames, pkiIPs(certs[0])...), ", ")))
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("no [[server]] certificate carries %q (%s): the new site will refuse the hub; give --hub a name one carries", host, strings.Join(names, "; "))
}

func pkiIPs(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
