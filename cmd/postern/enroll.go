package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/pki"
)

type enrollFlags struct {
	config    string
	token     string
	tokenFile string
	keyType   pkiKeyTypeFlag
	keyGroup  string
	names     pkiNameFlags
}

// cmdEnroll is `postern enroll`: a new site redeems the hub's invitation
// and writes [tls] cert, key and ca where its config names them.
func cmdEnroll(args []string, stdout, stderr io.Writer) int {
	var f enrollFlags
	fs := flag.NewFlagSet("postern enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: postern enroll (--token TOKEN | --token-file FILE) -c FILE [--key-type ecdsa-p256]")
		fs.PrintDefaults()
	}
	fs.StringVar(&f.config, "c", "", "this site's config `FILE`: [tls] cert, key and ca are written there")
	fs.StringVar(&f.token, "token", "", "the `TOKEN` `postern pki invite` printed on the hub")
	fs.StringVar(&f.tokenFile, "token-file", "", "a `FILE` holding the token")
	fs.Var(&f.keyType, "key-type", "`type` of the key made here: "+pkiKeyTypeNames())
	fs.StringVar(&f.keyGroup, "key-group", "", "give the key to `GROUP` with mode 0640, as docs/install.md installs keys for the service (default: 0600, owned by whoever runs enroll)")
	f.names.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if f.config == "" || (f.token == "") == (f.tokenFile == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "postern enroll: -c FILE and one of --token or --token-file are required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "postern enroll: %v\n", err)
		return 1
	}
	token := f.token
	if f.tokenFile != "" {
		if token, err = readToken(f.tokenFile); err != nil {
			fmt.Fprintf(stderr, "postern enroll: %v\n", err)
			return 1
		}
	}
	opts := agent.EnrollOptions{Token: token, KeyType: pki.KeyType(f.keyType)}
	if n := f.names.names(); !pkiNoNames(n) {
		opts.Names = &n
	}
	e, err := agent.EnrollFiles(context.Background(), cfg, opts)
	if err != nil {
		fmt.Fprintf(stderr, "postern enroll: %v\n", err)
		return 1
	}
	if f.keyGroup != "" {
		if err := shareKeyWithGroup(cfg.TLS.Key, f.keyGroup); err != nil {
			fmt.Fprintf(stderr, "postern enroll: enrolled, but %v\n", err)
			return 1
		}
	}
	printEnrolled(stdout, cfg, e)
	fmt.Fprintf(stdout, "ready: postern run -c %s\n", f.config)
	return 0
}

func printEnrolled(w io.Writer, cfg *config.Config, e *agent.Enrolled) {
	fmt.Fprintf(w, "enrolled with hub %s (invitation %s): certificate %s, serial %s, valid until %s\n",
		e.Token.Hub, e.Token.IDString(), strings.Join(pki.Names{CommonName: e.Cert.Subject.CommonName, DNSNames: e.Cert.DNSNames,
			IPAddresses: e.Cert.IPAddresses, URIs: e.Cert.URIs}.IdentityStrings(), ", "),
		pki.FormatSerial(e.Cert.SerialNumber), pkiDate(e.Cert.NotAfter))
	fmt.Fprintf(w, "  %-28s the certificate chain\n", cfg.TLS.Cert)
	fmt.Fprintf(w, "  %-28s the private key, made here; it never left this host\n", cfg.TLS.Key)
	fmt.Fprintf(w, "  %-28s the hub's CA (trusted for peers)\n", cfg.TLS.CA)
}

// readToken reads a token file (spaces and line ends around it ignored).
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// enrollOnStart is `postern run` with [enroll] token_file and no [tls]
// cert yet: redeem the token first. A site that has its certificate
// starts as usual, whatever the token file says.
func enrollOnStart(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if cfg.Enroll == nil || cfg.TLS.Cert == "" {
		return nil
	}
	if _, err := os.Stat(cfg.TLS.Cert); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	token, err := readToken(cfg.Enroll.TokenFile)
	if err != nil {
		return fmt.Errorf("[enroll] %w; [tls] cert %s does not exist yet", err, cfg.TLS.Cert)
	}
	e, err := agent.EnrollFiles(ctx, cfg, agent.EnrollOptions{Token: token})
	if err != nil {
		return err
	}
	log.Info("enrolled", "hub", e.Token.Hub, "invitation", e.Token.IDString(), "serial", pki.FormatSerial(e.Cert.SerialNumber),
		"not_after", pkiDate(e.Cert.NotAfter), "cert", cfg.TLS.Cert)
	return nil
}
