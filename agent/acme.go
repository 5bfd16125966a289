package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/postern-tunnel/postern/acmecert"
)

// [acme]: the [[server]] certificate comes from an ACME CA. At start a
// missing certificate is obtained before the servers load their files; a
// goroutine renews it when due and reloads at once, so renewal is the same
// make-before-break swap as any other change of the files.

// acmeObtainTimeout bounds obtaining the first certificate at start.
const acmeObtainTimeout = 5 * time.Minute

// acmeState is the [acme] upkeep: the manager, and the http-01 server
// that runs from New until Run returns (or until New fails and closes ln).
type acmeState struct {
	m      *acmecert.Manager
	ln     net.Listener // http-01 challenges
	srv    *http.Server
	served chan struct{} // closed when srv stops serving
}

// setupACME binds the challenge listener and, when there is no usable
// certificate yet, obtains one.
func (a *Agent) setupACME() error {
	c := a.cfg.ACME
	if c == nil {
		return nil
	}
	m := &acmecert.Manager{
		Directory: c.Directory, Domains: c.Domains, Email: c.Email,
		CertPath: c.CertPath(), KeyPath: c.KeyPath(), AccountKey: c.AccountKeyPath(),
		RenewBefore: c.RenewBefore.D(), Log: a.log,
	}
	if c.CARoots != "" {
		data, err := os.ReadFile(c.CARoots)
		if err != nil {
			return fmt.Errorf("%s: acme.ca_roots: %w", a.where(0), err)
		}
		m.Roots = x509.NewCertPool()
		if !m.Roots.AppendCertsFromPEM(data) {
			return fmt.Errorf("%s: acme.ca_roots: %s holds no PEM certificate", a.where(0), c.CARoots)
		}
	}
	ln, err := a.opts.Listen("tcp", string(c.HTTPListen))
	if err != nil {
		return fmt.Errorf("%s: acme.http_listen %s: %w", a.where(0), c.HTTPListen, err)
	}
	// The challenge port faces the internet: small bounds on everything.
	srv := &http.Server{Handler: m.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 8 << 10}
	a.acme = &acmeState{m: m, ln: ln, srv: srv, served: make(chan struct{})}
	go a.acme.serve(a)
	if at, _ := m.RenewAt(time.Now()); time.Until(at) > 0 {
		return nil
	}
	if _, err := os.Stat(m.CertPath); err == nil {
		return nil // due, but usable meanwhile: Run renews it
	}
	ctx, cancel := context.WithTimeout(context.Background(), acmeObtainTimeout)
	defer cancel()
	a.log.Info("acme: obtaining the server certificate", "directory", c.Directory, "domains", c.Domains)
	if err := m.Obtain(ctx); err != nil {
		return fmt.Errorf("%s: [acme]: %w", a.where(0), err)
	}
	return nil
}

// serve answers http-01 challenges until the listener or server closes.
func (s *acmeState) serve(a *Agent) {
	defer close(s.served)
	err := s.srv.Serve(s.ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		a.log.Error("acme: challenge listener stopped", "listen", s.ln.Addr().String(), "err", err.Error())
	}
}

// startACME serves http-01 challenges and renews the certificate until ctx
// is done. The returned function waits for both to stop.
func (a *Agent) startACME(ctx context.Context) (wait func()) {
	if a.acme == nil {
		return func() {}
	}
	m := a.acme.m
	m.Changed = func() {
		if err := a.Reload(); err != nil {
			a.log.Error("acme: reload after the new certificate reported errors", "err", err.Error())
		}
	}
	a.log.Info("acme: answering http-01 challenges", "listen", a.acme.ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	return func() {
		a.acme.srv.Close()
		<-a.acme.served
		<-done
	}
}
