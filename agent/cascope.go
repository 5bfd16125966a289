package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/trust"
)

// CheckIdentities parses every identity pattern of cfg (allow, a reverse
// forward's via, a client's peer), so that `postern check` and `postern
// run` refuse the same entries in the same words, and refuses patterns that
// any of several trusted CAs could satisfy. When the CA bundles a pattern is matched under hold more
// than one CA (identity.Anchors), a pattern that matches a name (dns:, ip:,
// uri:, cn:, ou:, "*") must say which CA issued the certificate, or a
// partner's CA could mint another partner's name. Pins (sha256:, spki:)
// need no CA. Which bundles count:
//
//   - a service's allow: every [[server]] and [[client]] bundle, since
//     streams reach services over tunnels of both kinds;
//   - a reverse forward's via: the [[server]] bundles (accepted tunnels);
//   - a client's peer pins: that client's bundle; a server's peer: that server's.
//
// Both `postern run` (New) and `postern check` call it. A bundle that does
// not load is skipped: loading it reports that error.
func CheckIdentities(cfg *config.Config) []error {
	where := func(line int) string {
		if line > 0 {
			return fmt.Sprintf("config %s:%d", cfg.Path, line)
		}
		return "config " + cfg.Path
	}
	var servers, all bundleSet
	for _, s := range cfg.Servers {
		servers.add(s.CA)
		all.add(s.CA)
	}
	for _, c := range cfg.Clients {
		all.add(c.CA)
	}
	var errs []error
	check := func(entries []string, set *bundleSet, what func(string) string) {
		for _, e := range entries {
			p, err := identity.Parse(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", what(e), e, err))
				continue
			}
			if err := identity.CheckScope(p, set.anchors(), set.names()); err != nil {
				errs = append(errs, fmt.Errorf("%s %w", what(e), err))
			}
		}
	}
	for _, s := range cfg.Services {
		check(s.Allow, &all, func(string) string { return fmt.Sprintf("%s: service %q: allow", where(s.Line), s.Name) })
	}
	for _, f := range cfg.Forwards {
		if !isClientName(cfg, f.Via) {
			check([]string{f.Via}, &servers, func(string) string { return fmt.Sprintf("%s: forward %s: via", where(f.Line), f.Listen) })
		}
	}
	for _, s := range cfg.Servers {
		var own bundleSet
		own.add(s.CA)
		check(s.Peer, &own, func(string) string { return fmt.Sprintf("%s: server %s: peer", where(s.Line), s.Listen) })
	}
	for _, c := range cfg.Clients {
		var own bundleSet
		own.add(c.CA)
		check(c.Peer, &own, func(string) string { return fmt.Sprintf("%s: client %q: peer", where(c.Line), c.Name) })
	}
	return errs
}

// caScopeError is CheckIdentities as one error, or nil. A reload that would
// trust a second CA under name patterns that do not say which CA is
// refused like a file that does not load: the agent keeps what it has.
func caScopeError(cfg *config.Config) error {
	errs := CheckIdentities(cfg)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("the ca files now trust more CAs than the config can tell apart: %w", errors.Join(errs...))
}

// isClientName reports whether via names a [[client]] (a forward through
// it) rather than a peer identity (a reverse forward).
func isClientName(cfg *config.Config, via string) bool {
	return slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Name == via })
}

// bundleSet is the CA bundles one kind of pattern is matched under.
type bundleSet struct {
	files []string
	certs []*x509.Certificate
}

// add reads the bundle at path once; one that does not load is left out.
func (b *bundleSet) add(path string) {
	if path == "" || slices.Contains(b.files, path) {
		return
	}
	cas, err := trust.LoadCACerts(path)
	if err != nil {
		return
	}
	b.files = append(b.files, path)
	b.certs = append(b.certs, cas...)
}

func (b *bundleSet) anchors() []*x509.Certificate { return identity.Anchors(b.certs) }

func (b *bundleSet) names() string { return "ca " + strings.Join(b.files, ", ") }

// verifiedIssuer names the CA that issued the peer's certificate in its
// first verified chain, with its fingerprint, for the log line of a
// refused stream: an allow entry that names a CA is matched against it.
func verifiedIssuer(chains [][]*x509.Certificate) string {
	if len(chains) == 0 || len(chains[0]) < 2 {
		return "unknown"
	}
	ca := chains[0][1]
	return trust.Subject(ca) + " sha256:" + identity.Fingerprint(ca)
}
