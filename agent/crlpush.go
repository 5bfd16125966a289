package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	capki "github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Revocation pushed to the sites (docs/certificates.md): an agent with
// [ca] watches its CA folder's CRL (ca.crl, which `postern pki revoke` and
// `postern pki crl` write), applies it to its own tunnels at once and
// pushes it over every live tunnel, on connect and on change. An agent
// that receives a CRL checks its signature against the CAs it trusts,
// keeps the newest per CA (in memory, and in NAME.pushed.crl beside each
// [tls] ca bundle NAME.crt, read again at start) and closes the tunnels
// of peers it revokes.

// Timing and bounds of the CRL push.
const (
	crlWatchEvery   = time.Second // how often the [ca] CRL file is looked at
	crlPushesAtOnce = 16          // pushes in flight at once
	pushedCRLName   = ".pushed.crl"
	pushedCRLLimit  = 4 // CRLs kept per CA bundle file
)

// crlPush is the CRL push state. The zero value is ready once init ran.
type crlPush struct {
	once   sync.Once
	sem    chan struct{}
	metric *prometheus.CounterVec

	mu      sync.Mutex
	own     []byte                // the [ca] CRL (DER) this agent pushes, or nil
	ownSeen [2]int64              // ca.crl size and modification time last read
	held    map[string]*trust.CRL // newest CRL per issuing CA: pushed here, or the [ca]'s own
	list    []*trust.CRL          // held, as set on the credentials
}

func (c *crlPush) init(a *Agent) {
	c.once.Do(func() {
		c.sem = make(chan struct{}, crlPushesAtOnce)
		c.held = map[string]*trust.CRL{}
		c.metric = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_crl_push_total",
			Help: "CRLs pushed over tunnels, by result: sent (this agent's [ca] CRL to a peer), send_failed, received (newer than the one held), refused (signature or issuer not trusted).",
		}, []string{"result"})
		for _, v := range []string{"sent", "send_failed", "received", "refused"} {
			c.metric.WithLabelValues(v)
		}
		a.metrics.registry.MustRegister(c.metric)
	})
}

// startCRLPush loads the CRLs pushed before a restart, then watches the
// [ca] CRL until ctx is done. The function it returns waits for the
// watcher to stop.
func (a *Agent) startCRLPush(ctx context.Context) (wait func()) {
	a.crls.init(a)
	a.loadPushedCRLs()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(crlWatchEvery)
		defer tick.Stop()
		for {
			a.watchOwnCRL()
			a.applyPushed(false)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { <-done }
}

// issuerKey names the CA a CRL is from.
func issuerKey(c *x509.Certificate) string {
	return string(c.RawSubject) + "\x00" + string(c.RawSubjectPublicKeyInfo)
}

// newer reports whether x supersedes y (a higher CRL number, or a later
// thisUpdate when either has no number).
func newer(x, y *x509.RevocationList) bool {
	if x.Number != nil && y.Number != nil {
		return x.Number.Cmp(y.Number) > 0
	}
	return x.ThisUpdate.After(y.ThisUpdate)
}

// offer keeps crl when it is newer than the one held for its CA.
func (c *crlPush) offer(crl *trust.CRL) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := issuerKey(crl.Issuer)
	if old := c.held[k]; old != nil && !newer(crl.List, old.List) {
		return false
	}
	c.held[k] = crl
	c.list = nil
	for _, h := range c.held {
		c.list = append(c.list, h)
	}
	return true
}

func (c *crlPush) current() []*trust.CRL {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.list
}

// trustedCAs are the CAs of every endpoint's bundle.
func (a *Agent) trustedCAs() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range a.allCreds() {
		for _, ca := range c.Load().CAs {
			if !slices.ContainsFunc(out, func(o *x509.Certificate) bool { return o.Equal(ca) }) {
				out = append(out, ca)
			}
		}
	}
	return out
}

// applyPushed sets the held CRLs on every endpoint (a reload may have made
// new credentials) and, when recheck is set, closes the tunnels of peers
// they revoke.
func (a *Agent) applyPushed(recheck bool) {
	list := a.crls.current()
	for _, c := range a.allCreds() {
		if !slices.Equal(c.Pushed(), list) {
			c.SetPushed(list)
		}
	}
	if recheck {
		w := &a.certs
		w.mu.Lock()
		w.setup(a)
		a.recheckTunnels(w.endpoints, time.Now())
		w.mu.Unlock()
	}
}

// watchOwnCRL reads the [ca] CRL when it changed, applies it here and
// pushes it to every live tunnel.
func (a *Agent) watchOwnCRL() {
	cc := a.snapshot().CA
	if cc == nil {
		return
	}
	path := filepath.Join(cc.Dir, capki.CRLFile)
	fi, err := os.Stat(path)
	if err != nil {
		return // no CRL yet: `postern pki crl` makes one
	}
	seen := [2]int64{fi.Size(), fi.ModTime().UnixNano()}
	a.crls.mu.Lock()
	same := seen == a.crls.ownSeen
	a.crls.mu.Unlock()
	if same {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	cas, err := trust.LoadCACerts(filepath.Join(cc.Dir, capki.CertFile))
	var crls []*trust.CRL
	if err == nil {
		crls, err = trust.VerifyCRL(path, data, cas)
	}
	if err != nil {
		a.log.Error("[ca] CRL does not load; it is not pushed (run postern pki crl)", "file", path, "err", err)
		a.crls.mu.Lock()
		a.crls.ownSeen = seen
		a.crls.mu.Unlock()
		return
	}
	crl := crls[0]
	a.crls.mu.Lock()
	a.crls.ownSeen = seen
	changed := !bytes.Equal(a.crls.own, crl.List.Raw)
	a.crls.own = crl.List.Raw
	a.crls.mu.Unlock()
	if !changed {
		return
	}
	a.crls.offer(crl)
	a.applyPushed(true)
	if !fitsPush(crl.List.Raw) {
		a.log.Error("[ca] CRL applied here, but too large to push to peers: give them the file (crl = [...]) instead",
			"file", path, "bytes", len(crl.List.Raw), "limit", maxPushedCRL, "revoked", len(crl.List.RevokedCertificateEntries))
		return
	}
	a.log.Info("[ca] CRL loaded; pushing it to every tunnel", "file", path, "number", crl.List.Number.String(),
		"revoked", len(crl.List.RevokedCertificateEntries), "next_update", stamp(crl.List.NextUpdate))
	for _, t := range a.liveTunnels() {
		a.pushCRLTo(t)
	}
}

// maxPushedCRL is the largest CRL a control request carries.
const maxPushedCRL = wire.MaxControlBody - 1 - len(wire.OpCRLPush)

func fitsPush(der []byte) bool { return len(der) <= maxPushedCRL }

// pushCRLTo sends the [ca] CRL to t's peer, in the background.
func (a *Agent) pushCRLTo(t *tunnel.Tunnel) {
	a.crls.mu.Lock()
	der := a.crls.own
	a.crls.mu.Unlock()
	if der == nil || !fitsPush(der) {
		return
	}
	a.crls.init(a)
	go func() {
		select {
		case a.crls.sem <- struct{}{}:
			defer func() { <-a.crls.sem }()
		case <-t.Done():
			return
		}
		_, err := askPeer(t, wire.OpCRLPush, der)
		var ce *wire.ControlError
		switch {
		case err == nil:
			a.crls.metric.WithLabelValues("sent").Inc()
			a.log.Debug("CRL pushed", "tunnel", tunnelName(t))
		case errors.As(err, &ce) || errors.Is(err, wire.ErrControlUnsupported):
			a.crls.metric.WithLabelValues("send_failed").Inc()
			a.log.Info("peer did not take the pushed CRL", "tunnel", tunnelName(t), "reason", err.Error())
		default:
			a.crls.metric.WithLabelValues("send_failed").Inc()
			if !t.Closed() {
				a.log.Warn("CRL push failed", "tunnel", tunnelName(t), "err", err.Error())
			}
		}
	}()
}

// answerCRLPush takes a CRL a peer pushed.
func (a *Agent) answerCRLPush(t *tunnel.Tunnel, der []byte, log *slog.Logger) wire.ControlReply {
	a.crls.init(a)
	source := "pushed by " + identity.Describe(t.Peer)
	crls, err := trust.VerifyCRL(source, der, a.trustedCAs())
	if err == nil && len(crls) != 1 {
		err = fmt.Errorf("%d CRLs in one push; want one", len(crls))
	}
	if err != nil {
		a.crls.metric.WithLabelValues("refused").Inc()
		log.Info("pushed CRL refused", "reason", err.Error())
		return wire.ControlReply{Code: wire.ControlRefused, Reason: "CRL not taken: " + err.Error()}
	}
	crl := crls[0]
	if !a.crls.offer(crl) {
		return wire.ControlReply{Code: wire.ControlOK, Reason: "already held"}
	}
	a.crls.metric.WithLabelValues("received").Inc()
	log.Info("CRL received from peer; closing the tunnels of peers it revokes", "issuer", trust.Subject(crl.Issuer),
		"number", fmt.Sprint(crl.List.Number), "revoked", len(crl.List.RevokedCertificateEntries))
	a.savePushedCRLs()
	a.applyPushed(true)
	return wire.ControlReply{Code: wire.ControlOK}
}

// pushedPath is where the CRLs pushed for CA bundle ca are kept.
func pushedPath(ca string) string {
	return strings.TrimSuffix(ca, filepath.Ext(ca)) + pushedCRLName
}

// caBundles are the endpoints' CA bundle files with their CAs.
func (a *Agent) caBundles() map[string][]*x509.Certificate {
	out := map[string][]*x509.Certificate{}
	for _, c := range a.allCreds() {
		m := c.Load()
		if m.Files.CA != "" {
			out[m.Files.CA] = m.CAs
		}
	}
	return out
}

// savePushedCRLs writes, beside each CA bundle, the held CRLs it can verify
// (those of this agent's own [ca] excepted: they are in its folder).
func (a *Agent) savePushedCRLs() {
	a.crls.mu.Lock()
	own := a.crls.own
	held := slices.Clone(a.crls.list)
	a.crls.mu.Unlock()
	for ca, cas := range a.caBundles() {
		var out []byte
		n := 0
		for _, h := range held {
			if bytes.Equal(h.List.Raw, own) || n >= pushedCRLLimit {
				continue
			}
			if _, err := trust.VerifyCRL("", h.List.Raw, cas); err != nil {
				continue
			}
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: h.List.Raw})...)
			n++
		}
		if len(out) == 0 {
			continue
		}
		path := pushedPath(ca)
		if err := capki.ReplaceFile(path, out, 0o644); err != nil {
			a.log.Warn("pushed CRL not saved; it is kept in memory until the agent restarts", "file", path, "err", err)
		}
	}
}

// loadPushedCRLs reads the CRLs saved beside each CA bundle.
func (a *Agent) loadPushedCRLs() {
	for ca, cas := range a.caBundles() {
		path := pushedPath(ca)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var crls []*trust.CRL
		if err == nil {
			crls, err = trust.VerifyCRL(path, data, cas)
		}
		if err != nil {
			a.log.Warn("saved pushed CRL ignored; the next push replaces it", "file", path, "err", err)
			continue
		}
		for _, c := range crls {
			a.crls.offer(c)
		}
		a.log.Info("pushed CRL loaded", "file", path, "crls", len(crls))
	}
	a.applyPushed(false)
}
