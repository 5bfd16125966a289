package main

import (
	"bufio"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/pki"
)

// cmdPKI runs `postern pki ACTION ...`, a small private CA in a folder.
func cmdPKI(args []string, stdout, stderr io.Writer) int {
	return pkiMain(args, os.Stdin, stdout, stderr)
}

// pkiEnv is what a pki subcommand reads from and writes to.
type pkiEnv struct {
	stdin          io.Reader // answers to `sign`'s question
	stdout, stderr io.Writer
}

type pkiCommand struct {
	name, args, what string
	run              func(env pkiEnv, args []string) int
}

func pkiCommands() []pkiCommand {
	return []pkiCommand{
		{"init", "[--dir DIR] [--cn NAME] [--hub HOST:PORT]", "create a CA (with --hub: and the hub's certificate)", pkiInit},
		{"issue", "--usage server|client|both --dns NAME ...", "make a key and a certificate here", pkiIssue},
		{"request", "--cn NAME ...", "(partner) make a key and a CSR; the key stays here", pkiRequest},
		{"sign", "--usage server|client|both FILE.csr", "(CA) show a partner's CSR, then sign it", pkiSign},
		{"intermediate", "--cn NAME --permit-dns DOMAIN ... --out DIR", "(CA) a name-constrained CA for a partner", pkiIntermediate},
		{"invite", "--dns NAME ... [--hub HOST:PORT]", "(hub) a one-time enrollment token for a new site", pkiInvite},
		{"revoke", "[--reason R] SERIAL|FILE.crt", "revoke a certificate and rewrite the CRL", pkiRevoke},
		{"crl", "[--crl-validity 7d]", "re-sign the CRL with a new next update", pkiCRL},
		{"show", "[--ca CA.crt] FILE...", "describe certificates, CSRs, CRLs and keys", pkiShow},
	}
}

func pkiMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := pkiEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		pkiUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range pkiCommands() {
		if c.name == args[0] {
			return c.run(env, args[1:])
		}
	}
	fmt.Fprintf(stderr, "postern pki: unknown action %q\n\n", args[0])
	pkiUsage(stderr)
	return 2
}

func pkiUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: postern pki ACTION [flags]")
	fmt.Fprintln(w)
	for _, c := range pkiCommands() {
		fmt.Fprintf(w, "  postern pki %-12s %-42s %s\n", c.name, c.args, c.what)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `postern pki ACTION -h` for the flags of one action.")
}

// pkiFlags starts the flag set of one action.
func pkiFlags(action, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("postern pki "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: postern pki %s %s\n\n", action, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// pkiParse parses flags placed before, between or after positional
// arguments (`sign partner.csr --yes` works), and checks how many positional
// arguments there are. ok is false when the action must stop with code.
func pkiParse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	var msg string
	switch {
	case len(pos) < minArgs:
		msg = "missing argument: see the usage below"
	case maxArgs == 0 && len(pos) > 0:
		msg = fmt.Sprintf("unexpected argument %q: this action takes flags only", pos[0])
	case maxArgs >= 0 && len(pos) > maxArgs:
		msg = fmt.Sprintf("too many arguments %q: give one file or serial at a time", pos)
	}
	if msg != "" {
		fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), msg)
		fs.Usage()
		return nil, 2, false
	}
	return pos, 0, true
}

// pkiFail prints an error the way every pki action does and returns 1.
func pkiFail(env pkiEnv, action string, err error) int {
	fmt.Fprintf(env.stderr, "postern pki %s: %v\n", action, err)
	return 1
}

// pkiUsageFail reports a missing or inconsistent flag and returns 2.
func pkiUsageFail(env pkiEnv, fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(env.stderr, "%s: %s\n", fs.Name(), msg)
	fs.Usage()
	return 2
}

// pkiOpen opens the CA in dir with a message that says what to do when
// there is none.
func pkiOpen(dir string) (*pki.CA, error) {
	ca, err := pki.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CA in %s (%v): create one with `postern pki init --dir %s`, or point --dir at your CA folder", dir, err, dir)
	}
	return ca, err
}

// ---- init

type pkiInitFlags struct {
	dir      string
	cn       string
	keyType  pkiKeyTypeFlag
	validity pkiDurationFlag
	hub      string

	intermediates bool
}

func pkiInit(env pkiEnv, args []string) int {
	f := pkiInitFlags{validity: pkiDurationFlag(pki.DefaultCAValidity)}
	fs := pkiFlags("init", "[--dir DIR] [--cn NAME] [--hub HOST:PORT] [--key-type TYPE] [--validity 10y] [--intermediates]", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder` to create")
	fs.StringVar(&f.cn, "cn", pki.DefaultCAName, "common `name` of the CA, shown to peers in errors")
	fs.StringVar(&f.hub, "hub", "", "also issue the hub's server certificate for `HOST:PORT`, the address sites dial (HOST becomes its DNS name or IP address): DIR/"+
		pki.HubCertFile+" and DIR/"+pki.HubKeyFile+" (mode 0600) for the hub's [tls] cert and key; DIR/"+pki.HubFile+" records the address for `pki invite`")
	fs.Var(&f.keyType, "key-type", "key `type` of the CA (and of the hub's key with --hub): "+pkiKeyTypeNames())
	fs.Var(&f.validity, "validity", "how long the CA is valid (`DURATION`: 10y, 365d, 720h)")
	fs.BoolVar(&f.intermediates, "intermediates", false, "let this CA sign partners' name-constrained CAs (`postern pki intermediate`)")
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	var hubNames pki.Names
	crtPath, keyPath, addrPath := filepath.Join(f.dir, pki.HubCertFile), filepath.Join(f.dir, pki.HubKeyFile), filepath.Join(f.dir, pki.HubFile)
	if f.hub != "" {
		var err error
		if hubNames, err = pki.HubNames(f.hub); err != nil {
			return pkiUsageFail(env, fs, "--hub: "+err.Error())
		}
		for _, p := range []string{crtPath, keyPath, addrPath} {
			if _, err := os.Lstat(p); err == nil {
				return pkiFail(env, "init", fmt.Errorf("%s already exists: no CA made; choose another --dir (a CA folder's hub certificate comes with the CA)", p))
			}
		}
	}
	ca, err := pki.Init(f.dir, pki.InitOptions{CommonName: f.cn, KeyType: pki.KeyType(f.keyType), Validity: time.Duration(f.validity),
		Intermediates: f.intermediates})
	if errors.Is(err, pki.ErrExists) {
		return pkiFail(env, "init", fmt.Errorf("%v: use it with --dir %s, or choose another --dir", err, f.dir))
	}
	if err != nil {
		return pkiFail(env, "init", err)
	}
	w := env.stdout
	fmt.Fprintf(w, "created CA %q in %s (%s, valid until %s)\n", ca.Cert.Subject.CommonName, f.dir, pki.KeyDescription(ca.Cert.PublicKey), pkiDate(ca.Cert.NotAfter))
	fmt.Fprintf(w, "  %-24s give to every agent as tls.ca (or a partner's ca)\n", filepath.Join(f.dir, pki.CertFile))
	fmt.Fprintf(w, "  %-24s the CA's private key: keep it secret and backed up\n", filepath.Join(f.dir, pki.KeyFile))
	fmt.Fprintf(w, "  %-24s give to every agent as tls.crl; re-sign it every few days with `postern pki crl`\n", filepath.Join(f.dir, pki.CRLFile))
	if f.hub != "" {
		if code := pkiInitHub(env, ca, f, hubNames, crtPath, keyPath); code != 0 {
			return code
		}
	} else {
		fmt.Fprintf(w, "next: postern pki issue --dir %s --usage server --dns HOST\n", f.dir)
		fmt.Fprintf(w, "new sites: postern pki invite --dir %s --dns SITE --hub HOST:PORT (a one-time token for `postern enroll`)\n", f.dir)
	}
	if f.intermediates {
		fmt.Fprintf(w, "partners' CAs: postern pki intermediate --dir %s --cn \"Partner A CA\" --permit-dns partner-a.example.com --out partner-a-ca\n", f.dir)
	}
	return 0
}

// pkiInitHub is `pki init --hub`, after the CA is made: the hub's server
// certificate as `pki issue --usage server` makes it, and the address
// `pki invite` sends sites to.
func pkiInitHub(env pkiEnv, ca *pki.CA, f pkiInitFlags, names pki.Names, crtPath, keyPath string) int {
	certPEM, err := pkiIssueFiles(ca, pki.IssueOptions{Names: names, Usage: pki.UsageServer, KeyType: pki.KeyType(f.keyType)}, crtPath, keyPath)
	if err == nil {
		err = pki.SaveHub(f.dir, f.hub)
	}
	if err != nil {
		return pkiFail(env, "init", fmt.Errorf("the CA is made, but the hub's certificate is not: %w; issue it with `postern pki issue --dir %s --usage server --dns HOST --out %s`",
			err, f.dir, strings.TrimSuffix(crtPath, ".crt")))
	}
	pkiPrintIssued(env, "issued the hub's", certPEM, crtPath, keyPath, "tls.key (private, mode 0600)")
	w := env.stdout
	_, port, _ := net.SplitHostPort(f.hub)
	fmt.Fprintf(w, "the hub's config: [tls] cert = %q, key = %q, ca = %q; [ca] dir = %q; a [[server]] listening on port %s (paths as seen from here; in the config they are relative to its folder)\n",
		crtPath, keyPath, filepath.Join(f.dir, pki.CertFile), f.dir, port)
	fmt.Fprintf(w, "new sites: postern pki invite --dir %s --dns SITE (a one-time token for `postern enroll`; sites dial %s, recorded in %s)\n",
		f.dir, f.hub, filepath.Join(f.dir, pki.HubFile))
	return 0
}

// ---- issue

type pkiIssueFlags struct {
	dir      string
	out      string
	names    pkiNameFlags
	usage    pkiUsageFlag
	validity pkiDurationFlag
	keyType  pkiKeyTypeFlag
	renew    bool
	newKey   bool
}

func pkiIssue(env pkiEnv, args []string) int {
	f := pkiIssueFlags{validity: pkiDurationFlag(pki.DefaultValidity)}
	fs := pkiFlags("issue", "--usage server|client|both [--cn NAME] [--dns NAME]... [--ip ADDR]... [--uri URI]... [--ou OU]... [--out PREFIX]", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder`")
	fs.StringVar(&f.out, "out", "", "write `PREFIX`.crt and PREFIX.key (default: from the CN or first DNS name)")
	f.names.register(fs)
	fs.Var(&f.usage, "usage", "which side: `server|client|both` (server accepts tunnels, client dials them); required")
	fs.Var(&f.validity, "validity", "how long the certificate is valid (`DURATION`: 90d, 720h)")
	fs.Var(&f.keyType, "key-type", "key `type`: "+pkiKeyTypeNames())
	fs.BoolVar(&f.renew, "renew", false, "replace PREFIX.crt in place with a new certificate for the same key (spki: pins keep matching); names and usage default to the old certificate's")
	fs.BoolVar(&f.newKey, "new-key", false, "with --renew: make a new key too and replace PREFIX.key")
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	if f.newKey && !f.renew {
		return pkiUsageFail(env, fs, "--new-key goes with --renew: without --renew every issue makes a new key")
	}
	if f.renew {
		return pkiRenewIssue(env, fs, f)
	}
	if f.usage == 0 {
		return pkiUsageFail(env, fs, "--usage is required: server (accepts tunnels), client (dials tunnels) or both")
	}
	names := f.names.names()
	out, err := pkiOutPrefix(f.out, names)
	if err != nil {
		return pkiUsageFail(env, fs, err.Error())
	}
	crtPath, keyPath := out+".crt", out+".key"
	if err := pkiCheckFree(crtPath, keyPath); err != nil {
		return pkiFail(env, "issue", fmt.Errorf("%w; to renew it in place: postern pki issue --renew --out %s", err, out))
	}
	ca, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "issue", err)
	}
	certPEM, err := pkiIssueFiles(ca, pki.IssueOptions{Names: names, Usage: pki.Usage(f.usage), Validity: time.Duration(f.validity), KeyType: pki.KeyType(f.keyType)}, crtPath, keyPath)
	if err != nil {
		return pkiFail(env, "issue", err)
	}
	pkiPrintIssued(env, "issued", certPEM, crtPath, keyPath, "tls.key (private, mode 0600: move it only over a secure channel)")
	return 0
}

// pkiIssueFiles makes a key and a certificate with ca and writes them as
// keyPath (mode 0600) and crtPath (0644, the chain), replacing neither. It
// returns the chain.
func pkiIssueFiles(ca *pki.CA, opts pki.IssueOptions, crtPath, keyPath string) ([]byte, error) {
	certPEM, keyPEM, err := ca.Issue(opts)
	if err != nil {
		return nil, err
	}
	if err := pkiWriteNew(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := pkiWriteNew(crtPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return certPEM, nil
}

// pkiPrintIssued says what was written and what the certificate proves.
func pkiPrintIssued(env pkiEnv, verb string, certPEM []byte, crtPath, keyPath, keyNote string) {
	cert, _ := pki.ParseCertPEM(certPEM)
	w := env.stdout
	fmt.Fprintf(w, "%s %s certificate %s, serial %s, valid until %s\n", verb, pkiUsageOf(cert), cert.Subject, pki.FormatSerial(cert.SerialNumber), pkiDate(cert.NotAfter))
	fmt.Fprintf(w, "  %-24s tls.cert\n", crtPath)
	fmt.Fprintf(w, "  %-24s %s\n", keyPath, keyNote)
	pkiPrintIdentities(w, identity.Identities(cert))
	if pkiUsageOf(cert)&pki.UsageServer != 0 && len(cert.DNSNames) == 0 && len(cert.IPAddresses) == 0 {
		fmt.Fprintln(env.stderr, "postern pki issue: note: this server certificate has no --dns or --ip, so clients can only accept it by pin (sha256: or spki:); add the name clients dial with --dns")
	}
}

// ---- request

type pkiRequestFlags struct {
	out     string
	names   pkiNameFlags
	keyType pkiKeyTypeFlag
	renew   bool
	token   string // --key pkcs11:URI: the key is made (or kept) in a token
}

func pkiRequest(env pkiEnv, args []string) int {
	var f pkiRequestFlags
	fs := pkiFlags("request", "[--cn NAME] [--dns NAME]... [--ip ADDR]... [--uri URI]... [--ou OU]... [--out PREFIX] [--key pkcs11:URI]", env.stderr)
	fs.StringVar(&f.out, "out", "", "write `PREFIX`.csr and PREFIX.key (default: from the CN or first DNS name)")
	f.names.register(fs)
	fs.Var(&f.keyType, "key-type", "key `type`: "+pkiKeyTypeNames())
	fs.BoolVar(&f.renew, "renew", false, "a new request for the existing PREFIX.key (replaces PREFIX.csr; the key stays, so spki: pins keep matching); names default to PREFIX.crt's when it is there")
	fs.StringVar(&f.token, "key", "", "make the key inside a PKCS#11 token: `pkcs11:token=LABEL;object=LABEL?module-path=LIB&pin-source=file:PIN` (only PREFIX.csr is written; with --renew the token's key is kept)")
	fs.StringVar(&f.token, "pkcs11", "", "the same as --key `pkcs11:URI`")
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	if f.token != "" {
		return pkiRequestToken(env, fs, f)
	}
	names := f.names.names()
	if f.renew {
		if f.out == "" {
			return pkiUsageFail(env, fs, "--renew needs --out PREFIX: the PREFIX.key to keep (and PREFIX.crt to take the names from)")
		}
		if pkiNoNames(names) {
			if cert, err := pkiReadCert(f.out + ".crt"); err == nil {
				names = pkiNamesOf(cert)
			}
		}
	}
	out, err := pkiOutPrefix(f.out, names)
	if err != nil {
		return pkiUsageFail(env, fs, err.Error())
	}
	csrPath, keyPath := out+".csr", out+".key"
	opts := pki.RequestOptions{Names: names, KeyType: pki.KeyType(f.keyType)}
	if f.renew {
		if opts.Key, err = pkiReadKey(keyPath); err != nil {
			return pkiFail(env, "request", fmt.Errorf("--renew keeps the existing key: %w", err))
		}
	} else if err := pkiCheckFree(csrPath, keyPath); err != nil {
		return pkiFail(env, "request", fmt.Errorf("%w; to renew with the same key: postern pki request --renew --out %s", err, out))
	}
	csrPEM, keyPEM, err := pki.NewRequest(opts)
	if err != nil {
		return pkiFail(env, "request", err)
	}
	w := env.stdout
	if f.renew {
		if err := pki.ReplaceFile(csrPath, csrPEM, 0o644); err != nil {
			return pkiFail(env, "request", err)
		}
		csr, _ := pki.ParseRequestPEM(csrPEM)
		spki, _ := identity.KeyHash(csr.PublicKey)
		fmt.Fprintf(w, "made a renewal request for %s with the existing key %s (%s)\n", csr.Subject, keyPath, pki.KeyDescription(csr.PublicKey))
		fmt.Fprintf(w, "  %-24s send this to the CA operator (it holds no secret)\n", csrPath)
		fmt.Fprintf(w, "the signed certificate must show spki:%s, as the old one did: replace %s.crt with it\n", spki, out)
		return 0
	}
	if err := pkiWriteNew(keyPath, keyPEM, 0o600); err != nil {
		return pkiFail(env, "request", err)
	}
	if err := pkiWriteNew(csrPath, csrPEM, 0o644); err != nil {
		return pkiFail(env, "request", err)
	}
	csr, _ := pki.ParseRequestPEM(csrPEM)
	fmt.Fprintf(w, "made a private key (%s) and a certificate request for %s\n", pki.KeyDescription(csr.PublicKey), csr.Subject)
	fmt.Fprintf(w, "  %-24s send this to the CA operator (it holds no secret)\n", csrPath)
	fmt.Fprintf(w, "  %-24s keep this here: it never leaves this machine; it becomes tls.key\n", keyPath)
	spki, _ := identity.KeyHash(csr.PublicKey)
	fmt.Fprintf(w, "the signed certificate must show spki:%s (check with `postern pki show`)\n", spki)
	return 0
}

// ---- sign

type pkiSignFlags struct {
	dir      string
	out      string
	names    pkiNameFlags
	usage    pkiUsageFlag
	validity pkiDurationFlag
	yes      bool
	renew    bool
}

func pkiSign(env pkiEnv, args []string) int {
	f := pkiSignFlags{validity: pkiDurationFlag(pki.DefaultValidity)}
	fs := pkiFlags("sign", "--usage server|client|both [--validity 90d] [--cn NAME] [--dns NAME]... [--yes] [--out PREFIX] FILE.csr", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder`")
	fs.StringVar(&f.out, "out", "", "write `PREFIX`.crt (default: the request's file name without .csr)")
	f.names.registerOverride(fs)
	fs.Var(&f.usage, "usage", "which side: `server|client|both` (server accepts tunnels, client dials them); required: the CA decides, not the request")
	fs.Var(&f.validity, "validity", "how long the certificate is valid (`DURATION`: 90d, 720h)")
	fs.BoolVar(&f.yes, "yes", false, "sign without asking for confirmation")
	fs.BoolVar(&f.renew, "renew", false, "replace an existing PREFIX.crt (a renewal request); without it an existing file is refused")
	pos, code, ok := pkiParse(fs, args, 1, 1)
	if !ok {
		return code
	}
	if f.usage == 0 {
		return pkiUsageFail(env, fs, "--usage is required: server (accepts tunnels), client (dials tunnels) or both; the CA decides it, not the request")
	}
	csrPath := pos[0]
	out := f.out
	if out == "" {
		out = strings.TrimSuffix(csrPath, filepath.Ext(csrPath))
	}
	crtPath := out + ".crt"
	if !f.renew {
		if err := pkiCheckFree(crtPath); err != nil {
			return pkiFail(env, "sign", fmt.Errorf("%w; for a renewal, add --renew to replace it", err))
		}
	}
	csr, err := pkiReadRequest(csrPath)
	if err != nil {
		return pkiFail(env, "sign", err)
	}
	ca, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "sign", err)
	}
	draft, err := ca.Prepare(csr, pki.SignOptions{Usage: pki.Usage(f.usage), Validity: time.Duration(f.validity), Override: f.names.names()})
	if err != nil {
		return pkiFail(env, "sign", fmt.Errorf("%s: %w", csrPath, err))
	}
	fmt.Fprint(env.stdout, draft)
	if !f.yes {
		if err := pkiConfirm(env, "sign it with "+ca.Cert.Subject.String()+"?"); err != nil {
			return pkiFail(env, "sign", err)
		}
	}
	cert, err := draft.Sign()
	if err != nil {
		return pkiFail(env, "sign", err)
	}
	write := pkiWriteNew
	if f.renew {
		write = pki.ReplaceFile
	}
	if err := write(crtPath, ca.ChainPEM(cert), 0o644); err != nil {
		return pkiFail(env, "sign", fmt.Errorf("%w (the certificate is signed and in %s; serial %s)", err, pki.IndexFile, pki.FormatSerial(cert.SerialNumber)))
	}
	fmt.Fprintf(env.stdout, "signed serial %s, valid until %s: wrote %s\n", pki.FormatSerial(cert.SerialNumber), pkiDate(cert.NotAfter), crtPath)
	fmt.Fprintf(env.stdout, "send back %s and %s (the partner's agents trust it as tls.ca)\n", crtPath, filepath.Join(f.dir, pki.CertFile))
	return 0
}

func pkiReadRequest(path string) (*x509.CertificateRequest, error) {
	o, err := pkiReadObject(path, func(o pki.Object) bool { return o.Request != nil },
		"no certificate request (CSR): the partner makes one with `postern pki request`")
	if err != nil {
		return nil, err
	}
	return o.Request, nil
}

func pkiReadCert(path string) (*x509.Certificate, error) {
	o, err := pkiReadObject(path, func(o pki.Object) bool { return o.Certificate != nil }, "no certificate")
	if err != nil {
		return nil, err
	}
	return o.Certificate, nil
}

// pkiReadObject returns the first object in the file at path that want
// accepts; missing says what the file lacks otherwise.
func pkiReadObject(path string, want func(pki.Object) bool, missing string) (pki.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return pki.Object{}, err
	}
	objs, err := pki.ParseObjects(data)
	if err != nil {
		return pki.Object{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, o := range objs {
		if want(o) {
			return o, nil
		}
	}
	return pki.Object{}, fmt.Errorf("%s holds %s", path, missing)
}

// pkiConfirm asks a yes/no question on stdin; anything but yes is an error.
func pkiConfirm(env pkiEnv, question string) error {
	fmt.Fprintf(env.stdout, "%s [y/N] ", question)
	line, err := bufio.NewReader(env.stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	if answer == "y" || answer == "yes" {
		return nil
	}
	fmt.Fprintln(env.stdout)
	if err != nil && answer == "" {
		return errors.New("not signed: no answer on standard input; check what is shown above and run again with --yes")
	}
	return fmt.Errorf("not signed (answer %q)", answer)
}

// ---- revoke and crl

type pkiRevokeFlags struct {
	dir         string
	reason      string
	crlValidity pkiDurationFlag
}

func pkiRevoke(env pkiEnv, args []string) int {
	f := pkiRevokeFlags{crlValidity: pkiDurationFlag(pki.DefaultCRLValidity)}
	fs := pkiFlags("revoke", "[--reason REASON] [--crl-validity 7d] SERIAL|FILE.crt", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder`")
	fs.StringVar(&f.reason, "reason", "unspecified", "`reason`: unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation, privilege-withdrawn")
	fs.Var(&f.crlValidity, "crl-validity", "how long the new CRL is valid (`DURATION`)")
	pos, code, ok := pkiParse(fs, args, 1, 1)
	if !ok {
		return code
	}
	reason, err := pki.ParseReason(f.reason)
	if err != nil {
		return pkiUsageFail(env, fs, err.Error())
	}
	ca, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "revoke", err)
	}
	what, err := pkiRevokeOne(ca, pos[0], reason)
	if errors.Is(err, pki.ErrAlreadyRevoked) {
		fmt.Fprintf(env.stdout, "%v; writing the CRL again\n", err)
	} else if err != nil {
		return pkiFail(env, "revoke", err)
	} else {
		fmt.Fprintf(env.stdout, "revoked %s, reason %s\n", what, pki.ReasonName(reason))
	}
	return pkiWriteCRL(env, "revoke", ca, f.dir, time.Duration(f.crlValidity))
}

// pkiRevokeOne revokes by certificate file when arg names a file, otherwise
// by serial number.
func pkiRevokeOne(ca *pki.CA, arg string, reason int) (string, error) {
	if _, err := os.Stat(arg); err == nil {
		cert, err := pkiReadCert(arg)
		if err != nil {
			return "", err
		}
		what := fmt.Sprintf("serial %s (%s)", pki.FormatSerial(cert.SerialNumber), cert.Subject)
		return what, ca.RevokeCertificate(cert, reason)
	}
	serial, err := pki.ParseSerial(arg)
	if err != nil {
		return "", fmt.Errorf("%q is neither a file nor a serial: %w", arg, err)
	}
	rec, _ := ca.Lookup(serial)
	return fmt.Sprintf("serial %s (%s)", pki.FormatSerial(serial), rec.Subject), ca.Revoke(serial, reason)
}

type pkiCRLFlags struct {
	dir         string
	crlValidity pkiDurationFlag
}

func pkiCRL(env pkiEnv, args []string) int {
	f := pkiCRLFlags{crlValidity: pkiDurationFlag(pki.DefaultCRLValidity)}
	fs := pkiFlags("crl", "[--dir DIR] [--crl-validity 7d]", env.stderr)
	fs.StringVar(&f.dir, "dir", "pki", "CA `folder`")
	fs.Var(&f.crlValidity, "crl-validity", "how long the new CRL is valid (`DURATION`)")
	if _, code, ok := pkiParse(fs, args, 0, 0); !ok {
		return code
	}
	ca, err := pkiOpen(f.dir)
	if err != nil {
		return pkiFail(env, "crl", err)
	}
	return pkiWriteCRL(env, "crl", ca, f.dir, time.Duration(f.crlValidity))
}

func pkiWriteCRL(env pkiEnv, action string, ca *pki.CA, dir string, validity time.Duration) int {
	crlPEM, err := ca.CRL(validity)
	if err != nil {
		return pkiFail(env, action, err)
	}
	crl, err := pki.ParseCRLPEM(crlPEM)
	if err != nil {
		return pkiFail(env, action, err)
	}
	fmt.Fprintf(env.stdout, "wrote %s: CRL number %s, %d revoked, next update %s\n", filepath.Join(dir, pki.CRLFile), crl.Number, len(crl.RevokedCertificateEntries), pkiDate(crl.NextUpdate))
	fmt.Fprintf(env.stdout, "copy it to every agent that lists it in tls.crl, and run `postern pki crl --dir %s` again before then\n", dir)
	return 0
}

// ---- show

type pkiShowFlags struct {
	ca string
}

func pkiShow(env pkiEnv, args []string) int {
	var f pkiShowFlags
	fs := pkiFlags("show", "[--ca CA.crt] FILE... (- for standard input)", env.stderr)
	fs.StringVar(&f.ca, "ca", "", "check certificates and CRLs against this CA certificate `file`")
	files, code, ok := pkiParse(fs, args, 1, -1)
	if !ok {
		return code
	}
	var opts pki.DescribeOptions
	if f.ca != "" {
		data, err := os.ReadFile(f.ca)
		if err == nil {
			opts.CA, err = pki.ParseCertPEM(data)
		}
		if err != nil {
			return pkiFail(env, "show", fmt.Errorf("--ca %s: %w", f.ca, err))
		}
	}
	status := 0
	for i, name := range files {
		objs, err := pkiReadObjects(env, name)
		if err != nil {
			status = pkiFail(env, "show", fmt.Errorf("%s: %w", name, err))
			continue
		}
		if i > 0 {
			fmt.Fprintln(env.stdout)
		}
		fmt.Fprintf(env.stdout, "%s:\n", name)
		opts.Intermediates = nil // a chain file: the leaf's CAs follow it
		for _, o := range objs {
			if o.Certificate != nil && o.Certificate.IsCA {
				opts.Intermediates = append(opts.Intermediates, o.Certificate)
			}
		}
		for _, o := range objs {
			fmt.Fprint(env.stdout, pki.Describe(o, opts))
		}
	}
	return status
}

func pkiReadObjects(env pkiEnv, name string) ([]pki.Object, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(io.LimitReader(env.stdin, 16<<20))
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	return pki.ParseObjects(data)
}

// ---- helpers

func pkiPrintIdentities(w io.Writer, ids []string) {
	fmt.Fprintln(w, "identities Postern matches (for allow = [...]):")
	for _, id := range ids {
		fmt.Fprintf(w, "  %s\n", id)
	}
}

func pkiDate(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// pkiOutPrefix returns out, or a file name made from the first identity.
func pkiOutPrefix(out string, n pki.Names) (string, error) {
	if out != "" {
		return out, nil
	}
	base := n.CommonName
	switch {
	case base != "":
	case len(n.DNSNames) > 0:
		base = n.DNSNames[0]
	case len(n.IPAddresses) > 0:
		base = n.IPAddresses[0].String()
	}
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, strings.TrimPrefix(base, "*."))
	if strings.Trim(base, "-.") == "" {
		return "", errors.New("--out PREFIX is required when there is no --cn or --dns to name the files after")
	}
	return base, nil
}

// pkiCheckFree refuses to go on when an output file exists already.
func pkiCheckFree(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: remove it or choose another --out", p)
		}
	}
	return nil
}

// pkiWriteNew creates path with mode perm; it never replaces a file.
func pkiWriteNew(path string, data []byte, perm os.FileMode) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists: remove it or choose another --out", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pkiNameFlags are --cn, --ou, --dns, --ip and --uri.
type pkiNameFlags struct {
	cn   string
	ou   pkiListFlag
	dns  pkiListFlag
	ip   pkiIPFlag
	uris pkiURIFlag
}

func (n *pkiNameFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.cn, "cn", "", "common `name` (cn: in allow lists; default: the first --dns)")
	fs.Var(&n.ou, "ou", "organizational `unit` (ou:), repeatable")
	fs.Var(&n.dns, "dns", "DNS `name` (dns:), repeatable or comma-separated; server certificates need the name clients dial")
	fs.Var(&n.ip, "ip", "IP `address` (ip:), repeatable or comma-separated")
	fs.Var(&n.uris, "uri", "`URI` such as spiffe://example.com/site-a (uri:), repeatable")
}

func (n *pkiNameFlags) registerOverride(fs *flag.FlagSet) {
	fs.StringVar(&n.cn, "cn", "", "replace the request's common `name`")
	fs.Var(&n.ou, "ou", "replace the request's organizational `unit`s, repeatable")
	fs.Var(&n.dns, "dns", "replace the request's DNS `name`s, repeatable")
	fs.Var(&n.ip, "ip", "replace the request's IP `address`es, repeatable")
	fs.Var(&n.uris, "uri", "replace the request's `URI`s, repeatable")
}

func (n *pkiNameFlags) names() pki.Names {
	return pki.Names{CommonName: n.cn, OrganizationalUnit: n.ou, DNSNames: n.dns, IPAddresses: n.ip, URIs: n.uris}
}

// pkiListFlag collects repeated values; commas separate values too.
type pkiListFlag []string

func (l *pkiListFlag) String() string { return strings.Join(*l, ",") }
func (l *pkiListFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

type pkiIPFlag []net.IP

func (l *pkiIPFlag) String() string { return fmt.Sprint([]net.IP(*l)) }
func (l *pkiIPFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(v))
		if ip == nil {
			return fmt.Errorf("%q is not an IP address", v)
		}
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		*l = append(*l, ip)
	}
	return nil
}

type pkiURIFlag []*url.URL

func (l *pkiURIFlag) String() string { return fmt.Sprint([]*url.URL(*l)) }
func (l *pkiURIFlag) Set(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme == "" {
		return fmt.Errorf("%q has no scheme: write it like spiffe://example.com/site-a", s)
	}
	*l = append(*l, u)
	return nil
}

type pkiUsageFlag pki.Usage

func (u *pkiUsageFlag) String() string {
	if *u == 0 {
		return ""
	}
	return pki.Usage(*u).String()
}
func (u *pkiUsageFlag) Set(s string) error {
	v, err := pki.ParseUsage(s)
	*u = pkiUsageFlag(v)
	return err
}

type pkiKeyTypeFlag pki.KeyType

func (k *pkiKeyTypeFlag) String() string {
	if *k == "" {
		return string(pki.KeyECDSAP256)
	}
	return string(*k)
}
func (k *pkiKeyTypeFlag) Set(s string) error {
	v, err := pki.ParseKeyType(s)
	*k = pkiKeyTypeFlag(v)
	return err
}

func pkiKeyTypeNames() string {
	var names []string
	for _, k := range pki.KeyTypes() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// pkiDurationFlag reads durations the way config keys do (config.ParseDuration):
// Go durations plus whole days ("90d") and years ("10y", 365 days each).
type pkiDurationFlag time.Duration

func (d *pkiDurationFlag) String() string { return config.FormatDuration(time.Duration(*d)) }
func (d *pkiDurationFlag) Set(s string) error {
	v, err := pkiParseDuration(s)
	*d = pkiDurationFlag(v)
	return err
}

// pkiParseDuration is config.ParseDuration, refusing zero: a certificate or
// CRL valid for no time at all is never what was meant.
func pkiParseDuration(s string) (time.Duration, error) {
	v, err := config.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if v <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be more than zero, like \"90d\"", s)
	}
	return v, nil
}
