package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// `postern check [-c FILE] [--connect]` validates a config and everything it
// points at, the way the agent will load it, and says what is wrong in one
// line per problem. With --connect it also opens each configured tunnel.
// Exit status: 0 when nothing is wrong (warnings allowed), 1 on any error,
// 2 on bad usage.

type checkFlags struct {
	config  string
	connect bool
	diff    bool
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var f checkFlags
	fs := flag.NewFlagSet("postern check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "c", "", "config `FILE` (TOML; default "+config.DefaultPath()+")")
	fs.BoolVar(&f.connect, "connect", false, "also open each [[client]] tunnel and report the result")
	fs.BoolVar(&f.diff, "diff", false, "also print what postern reload would change in the running agent")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: postern check [-c FILE] [--connect] [--diff]")
		return 2
	}
	defaulted := f.config == ""
	f.config = configPath(f.config, "check", stdout)
	r := &checkReport{w: stdout, now: time.Now()}
	cfg, err := loadConfig(f.config, defaulted)
	if err != nil {
		r.fail("%v", err)
		return r.finish()
	}
	r.ok("config %s: %d server(s), %d client(s), %d forward(s), %d service(s)",
		f.config, len(cfg.Servers), len(cfg.Clients), len(cfg.Forwards), len(cfg.Services))
	checkServices(r, cfg)
	if errs := agent.CheckIdentities(cfg); len(errs) > 0 {
		r.section("identities")
		for _, err := range errs {
			r.fail("%v", err)
		}
	}
	for i, s := range cfg.Servers {
		r.section("server %s (line %d)", s.Listen, s.Line)
		if acmePending(r, cfg, s.TLS) || enrollPending(r, cfg, s.TLS) {
			continue
		}
		if checkEndpoint(r, s.TLS, x509.ExtKeyUsageServerAuth, func(key string) string { return cfg.TLSKeyAt("server", i, key) }) {
			checkRenewal(r, cfg, s.TLS)
		}
	}
	checkCA(r, cfg)
	creds := map[string]*trust.Credentials{}
	for i, c := range cfg.Clients {
		r.section("client %q (line %d)", c.Name, c.Line)
		at := func(key string) string { return cfg.TLSKeyAt("client", i, key) }
		checkProxyPassword(r, c)
		if enrollPending(r, cfg, c.TLS) {
			continue
		}
		if ok := checkEndpoint(r, c.TLS, x509.ExtKeyUsageClientAuth, at) && checkPins(r, c.Peer); ok {
			if m, err := trust.LoadMaterial(trust.FilesOf(c.TLS)); err == nil {
				creds[c.Name] = trust.NewCredentials(m)
			}
			checkRenewal(r, cfg, c.TLS)
		}
	}
	checkRunningRenewals(r, f.config)
	if f.diff {
		checkDiff(r, f.config, cfg, stdout)
	}
	if f.connect {
		for _, c := range cfg.Clients {
			r.section("tunnel %s", c.Name)
			checkConnect(r, c, forwardServices(cfg, c.Name), creds[c.Name], tunnel.OptionsOf(cfg.Tunnel))
		}
	}
	return r.finish()
}

// checkReport prints one line per finding and counts errors and warnings.
type checkReport struct {
	w                io.Writer
	now              time.Time
	errors, warnings int
}

func (r *checkReport) section(format string, args ...any) {
	fmt.Fprintf(r.w, "%s:\n", fmt.Sprintf(format, args...))
}

func (r *checkReport) ok(format string, args ...any) { r.line("ok     ", format, args...) }
func (r *checkReport) note(format string, args ...any) {
	r.line("note   ", format, args...)
}

func (r *checkReport) warn(format string, args ...any) {
	r.warnings++
	r.line("WARNING", format, args...)
}

func (r *checkReport) fail(format string, args ...any) {
	r.errors++
	r.line("ERROR  ", format, args...)
}

func (r *checkReport) line(tag, format string, args ...any) {
	fmt.Fprintf(r.w, "  %s %s\n", tag, fmt.Sprintf(format, args...))
}

func (r *checkReport) finish() int {
	plural := func(n int, word string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", word)
		}
		return fmt.Sprintf("%d %ss", n, word)
	}
	if r.errors > 0 {
		fmt.Fprintf(r.w, "postern check: %s, %s\n", plural(r.errors, "error"), plural(r.warnings, "warning"))
		return 1
	}
	fmt.Fprintf(r.w, "postern check: ok (%s)\n", plural(r.warnings, "warning"))
	return 0
}

func checkServices(r *checkReport, cfg *config.Config) {
	if len(cfg.Services) == 0 {
		return
	}
	r.section("services")
	for _, s := range cfg.Services {
		allow, err := identity.ParseList(s.Allow)
		switch {
		case err != nil:
			// Reported under "identities", as postern run words it.
		case len(allow) == 0:
			r.warn("service %q (line %d): empty allow list: every stream to it is refused", s.Name, s.Line)
		default:
			targets := make([]string, 0, len(s.TargetList()))
			for _, t := range s.TargetList() {
				targets = append(targets, string(t))
			}
			r.ok("service %q → %s: allow %s", s.Name, strings.Join(targets, ", "), strings.Join(allow.Strings(), ", "))
		}
	}
}

// checkEndpoint checks the certificate material of one [[server]] or
// [[client]] and reports whether it would load. at says where a [tls] key
// is set ("postern.toml:3").
func checkEndpoint(r *checkReport, t config.TLS, usage x509.ExtKeyUsage, at func(key string) string) bool {
	errorsBefore := r.errors
	files := map[string][]byte{}
	read := func(role, path string) {
		if hsm.IsURI(path) {
			if data, ok := checkToken(r, role, path, at(role)); ok {
				files[path] = data
			}
			return
		}
		data, err := os.ReadFile(path)
		if err != nil {
			r.fail("%s %s: cannot read: %v", role, path, unwrapPath(err))
			return
		}
		files[path] = data
	}
	read("cert", t.Cert)
	read("key", t.Key)
	read("ca", t.CA)
	for _, c := range t.CRL {
		read("crl", c)
	}
	if files[t.Cert] != nil && files[t.Key] != nil && trust.Swapped(files[t.Cert], files[t.Key]) {
		r.fail("cert = %s (%s) holds a private key and key = %s (%s) holds a certificate: swap them",
			t.Cert, at("cert"), t.Key, at("key"))
		return false
	}
	if _, ok := files[t.Key]; ok && !hsm.IsURI(t.Key) {
		if p := trust.KeyPermissionProblem(t.Key); p != "" {
			r.warn("key %s: %s", t.Key, p)
		}
	}
	var leaf *x509.Certificate
	var chain []*x509.Certificate
	if files[t.Cert] != nil && files[t.Key] != nil {
		cert, l, err := trust.LoadKeyPair(t.Cert, t.Key)
		if err != nil {
			r.fail("%v", err)
		} else {
			leaf = l
			for _, der := range cert.Certificate[1:] {
				if c, err := x509.ParseCertificate(der); err == nil {
					chain = append(chain, c)
				}
			}
			r.ok("cert %s: %s, serial %s; key %s matches", checkName(t.Cert), identity.Describe(leaf), leaf.SerialNumber.Text(16), checkName(t.Key))
			checkValidity(r, "cert "+t.Cert+": certificate", leaf, t.ExpiryWarning.D())
			checkUsage(r, t.Cert, leaf, usage)
			for _, ic := range chain {
				checkValidity(r, "cert "+t.Cert+": intermediate CA", ic, t.ExpiryWarning.D())
			}
		}
	}
	var cas []*x509.Certificate
	if files[t.CA] != nil {
		var err error
		if cas, err = trust.LoadCACerts(t.CA); err != nil {
			r.fail("%v", err)
		} else {
			checkCAs(r, t, cas)
		}
	}
	if leaf != nil && cas != nil {
		checkChain(r, t, leaf, chain, cas, usage)
	}
	if cas != nil {
		for _, path := range t.CRL {
			if files[path] != nil {
				checkCRL(r, t, path, cas, leaf)
			}
		}
	}
	return r.errors == errorsBefore
}

// unwrapPath drops the "open PATH: " a PathError repeats.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func checkValidity(r *checkReport, what string, c *x509.Certificate, within time.Duration) {
	now := r.now
	switch left := c.NotAfter.Sub(now); {
	case now.Before(c.NotBefore):
		r.fail("%s %s is not valid yet: valid from %s (local clock %s) — check this host's clock (NTP)",
			what, trust.Subject(c), stamp(c.NotBefore), stamp(now))
	case left <= 0:
		r.fail("%s %s expired %s ago (not after %s; local clock %s) — renew it",
			what, trust.Subject(c), trust.RoundDuration(-left), stamp(c.NotAfter), stamp(now))
	case left <= within:
		r.warn("%s %s expires in %s (not after %s) — renew it soon", what, trust.Subject(c), trust.RoundDuration(left), stamp(c.NotAfter))
	default:
		r.ok("%s %s valid until %s (%s left)", what, trust.Subject(c), stamp(c.NotAfter), trust.RoundDuration(left))
	}
}

func checkUsage(r *checkReport, path string, c *x509.Certificate, want x509.ExtKeyUsage) {
	if len(c.ExtKeyUsage) == 0 {
		return
	}
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return
		}
	}
	role, name := "a [[server]]", "serverAuth"
	if want == x509.ExtKeyUsageClientAuth {
		role, name = "a [[client]]", "clientAuth"
	}
	r.fail("cert %s: %s lacks extended key usage %s, so peers refuse it for %s — issue it with --usage both (postern pki)",
		path, trust.Subject(c), name, role)
}

func checkCAs(r *checkReport, t config.TLS, cas []*x509.Certificate) {
	for _, ca := range cas {
		if !ca.IsCA {
			r.note("ca %s: %s is not a CA certificate: it can only stand for itself (a pinned self-signed peer)", t.CA, trust.Subject(ca))
		}
		checkValidity(r, "ca "+t.CA+": CA", ca, t.ExpiryWarning.D())
	}
}

// checkChain verifies this endpoint's own certificate against its own CA
// bundle. That the peer's CA differs is normal between partners, so an
// unknown issuer is a note; anything else that breaks the chain is an error.
func checkChain(r *checkReport, t config.TLS, leaf *x509.Certificate, chain, cas []*x509.Certificate, usage x509.ExtKeyUsage) {
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: r.now,
		KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range cas {
		opts.Roots.AddCert(c)
	}
	for _, c := range chain {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	var ua x509.UnknownAuthorityError
	switch {
	case err == nil:
		names := make([]string, len(chains[0]))
		for i, c := range chains[0] {
			names[i] = trust.Subject(c)
		}
		r.ok("chain: %s (the last one from ca)", strings.Join(names, " ← "))
	case errors.As(err, &ua):
		r.note("chain: %s was issued by %s, which is not in ca %s: fine when the peer's ca holds it (between partners each side trusts the other's CA)",
			trust.Subject(leaf), issuerOf(leaf), t.CA)
	default:
		var ci x509.CertificateInvalidError
		if errors.As(err, &ci) && (ci.Reason == x509.Expired || ci.Reason == x509.IncompatibleUsage) && ci.Cert == leaf {
			return // reported above with more detail
		}
		r.fail("chain: %s does not verify against ca %s: %v", trust.Subject(leaf), t.CA, err)
	}
}

func issuerOf(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return fmt.Sprintf("CN=%q", c.Issuer.CommonName)
	}
	return c.Issuer.String()
}

func checkCRL(r *checkReport, t config.TLS, path string, cas []*x509.Certificate, leaf *x509.Certificate) {
	crls, err := trust.LoadCRLFile(path, cas)
	if err != nil {
		r.fail("%v", err)
		return
	}
	for _, c := range crls {
		l := c.List
		switch next := l.NextUpdate; {
		case !next.IsZero() && r.now.After(next):
			msg := "crl %s of %s is stale: its next update was %s (%s ago) — publish a fresh one (postern pki crl)%s"
			args := []any{path, trust.Subject(c.Issuer), stamp(next), trust.RoundDuration(r.now.Sub(next))}
			if t.CRLStale == trust.CRLStaleWarn {
				r.warn(msg, append(args, "; used anyway (crl_stale = \"warn\")")...)
			} else {
				r.fail(msg, append(args, "; until then every peer it covers is refused (crl_stale = \"refuse\")")...)
			}
		case !next.IsZero() && next.Sub(r.now) < 24*time.Hour:
			r.warn("crl %s of %s goes stale in %s (next update %s) — publish a fresh one soon", path, trust.Subject(c.Issuer), trust.RoundDuration(next.Sub(r.now)), stamp(next))
		default:
			r.ok("crl %s of %s: %d revoked, next update %s", path, trust.Subject(c.Issuer), len(l.RevokedCertificateEntries), stampOrNever(next))
		}
		if leaf != nil && bytes.Equal(leaf.RawIssuer, c.Issuer.RawSubject) {
			for _, e := range l.RevokedCertificateEntries {
				if e.SerialNumber != nil && e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
					r.fail("cert %s: this agent's own certificate (serial %s) is revoked by crl %s — get a new one", t.Cert, leaf.SerialNumber.Text(16), path)
				}
			}
		}
	}
}

func checkPins(r *checkReport, peer []string) bool {
	ok := true
	for _, p := range peer {
		if _, err := identity.Parse(p); err != nil {
			ok = false // reported under "identities", as postern run words it
		}
	}
	if ok && len(peer) > 0 {
		r.ok("peer: the server must also match one of %s", strings.Join(peer, ", "))
	}
	return ok
}

// checkConnect opens the client's tunnel to each of its servers and says
// what happened, in the words the agent's log would use.
func checkConnect(r *checkReport, c config.Client, services []string, creds *trust.Credentials, opts tunnel.Options) {
	if creds == nil {
		r.fail("not tried: fix the errors of client %q above first", c.Name)
		return
	}
	var pins identity.List
	for _, p := range c.Peer {
		pat, _ := identity.Parse(p) // checked by checkPins
		pins = append(pins, pat)
	}
	proxy, err := client.NewProxy(c, nil)
	if err != nil {
		r.fail("%v", err)
		return
	}
	var d net.Dialer
	dial := proxy.Dial(d.DialContext)
	// Try every server first: a server that does not answer is an error
	// only when none does; otherwise it is a standby that is down.
	type attempt struct {
		addr, hop, verdict string
		services           []serviceVerdict
		err                error
	}
	var attempts []attempt
	answered := false
	for _, addr := range c.Servers {
		name := c.ServerName
		if name == "" {
			name = client.ServerNameOf(string(addr))
		}
		a := attempt{addr: string(addr), hop: proxy.Describe(string(addr))}
		a.verdict, a.services, a.err = connectOnce(dial, a.addr, name, creds, pins, *c.Mux, c.DialTimeout.D(), opts, services)
		answered = answered || a.err == nil
		attempts = append(attempts, a)
	}
	for _, a := range attempts {
		if a.hop != "" {
			if _, failed := errors.AsType[*client.ProxyError](a.err); failed {
				r.failOrStandby(answered, "%s: via proxy %s: %v", a.addr, a.hop, a.err)
				continue
			}
			r.ok("%s: via proxy %s: ok", a.addr, a.hop)
		}
		if a.err != nil {
			r.failOrStandby(answered, "%s: %v", a.addr, a.err)
			continue
		}
		r.ok("%s: %s", a.addr, a.verdict)
		for _, sv := range a.services {
			if sv.err != nil {
				r.fail("%s: service %q: %v", a.addr, sv.name, sv.err)
			} else {
				r.ok("%s: service %q: the peer accepts it and reached its target", a.addr, sv.name)
			}
		}
	}
}

// failOrStandby reports a server that did not answer: an error when no
// server of the client answered, a warning about a standby otherwise.
func (r *checkReport) failOrStandby(answered bool, format string, args ...any) {
	if answered {
		r.warn(format+" (a standby: another server of this client answered)", args...)
		return
	}
	r.fail(format, args...)
}

// serviceVerdict is how the peer answered an open request for a service a
// forward names.
type serviceVerdict struct {
	name string
	err  error // nil: OK
}

func connectOnce(dial client.DialFunc, addr, serverName string, creds *trust.Credentials, pins identity.List, mux bool, timeout time.Duration, opts tunnel.Options, services []string) (string, []serviceVerdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if pe, ok := errors.AsType[*client.ProxyError](err); ok {
		return "", nil, pe
	}
	if err != nil {
		return "", nil, fmt.Errorf("connect: %w", client.UnwrapOp(err))
	}
	defer conn.Close()
	cfg := trust.ClientConfig(creds, serverName, pins...)
	if !mux {
		cfg.NextProtos = nil
	}
	tc := tls.Client(conn, cfg)
	explain := func(err error) error {
		return errors.New(client.ExplainRefusal(ctx, err, creds, dial, addr, cfg))
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return "", nil, explain(err)
	}
	cs := tc.ConnectionState()
	peer := cs.PeerCertificates[0]
	var verdicts []serviceVerdict
	if mux {
		if err := trust.CheckALPN(cs); err != nil {
			return "", nil, err
		}
		t, err := tunnel.New(tc, true, opts)
		if err != nil {
			return "", nil, err
		}
		defer t.Close()
		if err := t.Confirm(ctx); err != nil {
			if errors.Is(err, tunnel.ErrNoAnswer) {
				return "", nil, fmt.Errorf("the server completed the TLS handshake but did not answer the first ping within dial_timeout (%s)", timeout)
			}
			return "", nil, explain(err)
		}
		for _, name := range services {
			verdicts = append(verdicts, serviceVerdict{name: name, err: openService(t, name, timeout)})
		}
	} else {
		// A raw TLS peer says nothing until we do; with TLS 1.3 a refusal
		// of our certificate arrives as an alert shortly after the handshake.
		tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := tc.Read(make([]byte, 1)); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return "", nil, explain(err)
			}
		}
	}
	return fmt.Sprintf("connected: server %s, %s, serial %s, valid until %s",
		identity.Describe(peer), tls.VersionName(cs.Version), peer.SerialNumber.Text(16), stamp(peer.NotAfter)), verdicts, nil
}

// openService asks the peer for service as a forward would and says how it
// answered. When the peer says OK it has connected the service's target;
// the stream then ends cleanly at once (the target sees a connection that
// closes without a byte).
func openService(t *tunnel.Tunnel, service string, timeout time.Duration) error {
	st, err := t.Open()
	if err != nil {
		return fmt.Errorf("open a stream: %w", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(timeout))
	req, err := wire.AppendOpen(nil, wire.OpenRequest{Service: service})
	if err != nil {
		return err
	}
	var cw [wire.FrameHeaderSize]byte
	wire.PutFrameHeader(cw[:], wire.FrameCloseWrite, 0)
	if _, err := st.Write(append(req, cw[:]...)); err != nil {
		return fmt.Errorf("send the open request: %w", err)
	}
	status, err := wire.ReadStatus(st)
	if err != nil {
		return fmt.Errorf("no answer to the open request within %s: %w", timeout, err)
	}
	if status.Code != wire.StatusOK {
		return &wire.RefusedError{Status: status}
	}
	// Let the peer finish its side before the tunnel closes, so the target
	// sees a clean end rather than a reset.
	fr := wire.NewFrameReader(st)
	defer fr.Release()
	for {
		f, err := fr.Next()
		if err != nil || f.Type != wire.FrameData {
			return nil
		}
	}
}

// forwardServices are the services the forwards through a client ask for.
func forwardServices(cfg *config.Config, client string) []string {
	var out []string
	for _, f := range cfg.Forwards {
		if f.Via == client && !slices.Contains(out, f.Service) {
			out = append(out, f.Service)
		}
	}
	return out
}

// checkProxyPassword says whether the proxy password file can be read and
// is private to its owner. It never prints the password.
func checkProxyPassword(r *checkReport, c config.Client) {
	if c.ProxyPasswordFile == "" {
		return
	}
	if _, err := os.ReadFile(c.ProxyPasswordFile); err != nil {
		r.fail("proxy_password_file %s: cannot read: %v", c.ProxyPasswordFile, unwrapPath(err))
		return
	}
	if p := trust.KeyPermissionProblem(c.ProxyPasswordFile); p != "" {
		r.warn("proxy_password_file %s: %s", c.ProxyPasswordFile, p)
		return
	}
	r.ok("proxy_password_file %s: readable", c.ProxyPasswordFile)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func stampOrNever(t time.Time) string {
	if t.IsZero() {
		return "none (never stale)"
	}
	return stamp(t)
}

// acmePending notes a [[server]] whose certificate [acme] has not obtained
// yet: the agent obtains it at start, so its absence is not an error.
func acmePending(r *checkReport, cfg *config.Config, t config.TLS) bool {
	a := cfg.ACME
	if a == nil || t.Cert != a.CertPath() {
		return false
	}
	if _, err := os.Stat(t.Cert); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	r.note("cert %s: not obtained yet; [acme] obtains it from %s for %s when the agent starts", t.Cert, a.Directory, strings.Join(a.Domains, ", "))
	return true
}
