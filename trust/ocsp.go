package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"golang.org/x/crypto/ocsp"
)

// OCSP timing. Answers are kept until their nextUpdate; an answer without
// one, and a failure, only briefly.
const (
	ocspTimeout      = 5 * time.Second    // one request to a responder
	ocspNoNextUpdate = 5 * time.Minute    // how long to keep an answer that has no nextUpdate
	ocspFailureTTL   = 10 * time.Second   // how long to remember that a responder did not answer
	ocspClockSkew    = 5 * time.Minute    // tolerated difference between our clock and the responder's
	ocspMaxResponse  = 1 << 20            // bytes read from a responder
	ocspMaxEntries   = 4096               // cached answers before expired ones are dropped
	ocspMaxCacheTime = 7 * 24 * time.Hour // even when nextUpdate is further away
)

// OCSPError says the revocation status of a peer certificate could not be
// learned from its OCSP responder while ocsp = "hard".
type OCSPError struct {
	Cert *x509.Certificate
	URL  string // the responder asked last
	Err  error
}

func (e *OCSPError) Error() string {
	return fmt.Sprintf("no OCSP answer for certificate %s (serial %s) from %s: %v", Subject(e.Cert), serialHex(e.Cert), e.URL, e.Err)
}

func (e *OCSPError) Unwrap() error { return e.Err }

// ocspCache holds OCSP answers per certificate and makes sure that many
// handshakes of one peer cause one request. The zero value is ready.
type ocspCache struct {
	mu      sync.Mutex
	entries map[string]*ocspEntry
	client  *http.Client // nil: a client with ocspTimeout
}

// ocspEntry is one answer, or one failure to get one. done is closed once
// the fields are set.
type ocspEntry struct {
	done  chan struct{}
	resp  *ocsp.Response
	url   string
	err   error
	until time.Time
}

// checkOCSP asks the leaf's responder (or the cache) for its status.
// Revoked always refuses. No answer, or "unknown", refuses in hard mode on
// a handshake and is a logged warning otherwise.
func (c *Credentials) checkOCSP(leaf, issuer *x509.Certificate, side Side, mode string, now time.Time, recheck bool) error {
	if len(leaf.OCSPServer) == 0 {
		return nil // the certificate names no responder: nothing to ask
	}
	e, fresh := c.ocsp.get(leaf, issuer, now)
	err := e.err
	if err == nil {
		switch e.resp.Status {
		case ocsp.Good:
			return nil
		case ocsp.Revoked:
			return &RevokedError{Cert: leaf, Source: "OCSP responder " + e.url, At: e.resp.RevokedAt, Reason: e.resp.RevocationReason}
		default:
			err = errors.New("the responder does not know this certificate (status unknown)")
		}
	}
	if mode == OCSPHard && !recheck {
		return &OCSPError{Cert: leaf, URL: e.url, Err: err}
	}
	if fresh {
		c.logger().Warn("peer certificate accepted without an OCSP answer",
			"side", side.peer(), "peer", identity.Describe(leaf), "serial", serialHex(leaf), "url", e.url, "err", err,
			"reason", fmt.Sprintf("accepted because ocsp = %q", mode))
	}
	return nil
}

// get returns the cached entry for leaf, fetching it when there is none or
// it has expired. fresh reports whether this call fetched it.
func (o *ocspCache) get(leaf, issuer *x509.Certificate, now time.Time) (e *ocspEntry, fresh bool) {
	key := ocspKey(leaf, issuer)
	o.mu.Lock()
	if o.entries == nil {
		o.entries = map[string]*ocspEntry{}
	}
	if e := o.entries[key]; e != nil {
		select {
		case <-e.done:
			if now.Before(e.until) {
				o.mu.Unlock()
				return e, false
			}
		default: // another handshake is asking right now: wait for its answer
			o.mu.Unlock()
			<-e.done
			return e, false
		}
	}
	e = &ocspEntry{done: make(chan struct{})}
	o.entries[key] = e
	o.prune(now)
	client := o.client
	o.mu.Unlock()

	if client == nil {
		// No keep-alive: answers are cached, so requests are rare, and an
		// idle connection would outlive the handshake that made it.
		client = &http.Client{Timeout: ocspTimeout, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true,
		}}
	}
	e.resp, e.url, e.err = fetchOCSP(client, leaf, issuer, now)
	switch {
	case e.err != nil:
		e.until = now.Add(ocspFailureTTL)
	case e.resp.NextUpdate.IsZero():
		e.until = now.Add(ocspNoNextUpdate)
	default:
		e.until = minTime(e.resp.NextUpdate, now.Add(ocspMaxCacheTime))
	}
	close(e.done)
	return e, true
}

// prune drops expired entries once the cache is large; mu must be held.
func (o *ocspCache) prune(now time.Time) {
	if len(o.entries) <= ocspMaxEntries {
		return
	}
	for k, e := range o.entries {
		select {
		case <-e.done:
			if !now.Before(e.until) {
				delete(o.entries, k)
			}
		default:
		}
	}
}

func ocspKey(leaf, issuer *x509.Certificate) string {
	s := sha256.Sum256(issuer.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:]) + "/" + serialHex(leaf)
}

// fetchOCSP asks each responder the leaf names, in order, until one gives
// a valid, signed, current answer.
func fetchOCSP(client *http.Client, leaf, issuer *x509.Certificate, now time.Time) (*ocsp.Response, string, error) {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, "", fmt.Errorf("build OCSP request: %w", err)
	}
	var responder string
	for _, responder = range leaf.OCSPServer {
		var resp *ocsp.Response
		resp, err = askOCSP(client, responder, req, leaf, issuer, now)
		if err == nil {
			return resp, responder, nil
		}
	}
	return nil, responder, err
}

func askOCSP(client *http.Client, responder string, req []byte, leaf, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	hr, err := client.Post(responder, "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		return nil, unwrapURLError(err)
	}
	defer hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", hr.Status)
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, ocspMaxResponse))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	resp, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return nil, fmt.Errorf("bad answer: %w", err)
	}
	if err := checkResponder(resp.Certificate, issuer, now); err != nil {
		return nil, fmt.Errorf("bad answer: %w", err)
	}
	if resp.ThisUpdate.After(now.Add(ocspClockSkew)) {
		return nil, fmt.Errorf("answer dated %s, in the future (local clock %s): check the clocks (NTP)",
			resp.ThisUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate.Add(ocspClockSkew)) {
		return nil, fmt.Errorf("stale answer: its next update was %s (local clock %s)",
			resp.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return resp, nil
}

// checkResponder accepts the certificate an answer was signed with (the
// OCSP parser has checked that the issuer signed it) only when the issuer
// delegated OCSP signing to it (RFC 6960 4.2.2.2) and it is valid now:
// any other certificate of the same CA, such as a peer's own, must not
// vouch for a certificate, least of all its own revoked one.
func checkResponder(rc, issuer *x509.Certificate, now time.Time) error {
	if rc == nil || bytes.Equal(rc.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
		return nil // signed with the issuer's own key
	}
	delegated := false
	for _, u := range rc.ExtKeyUsage {
		delegated = delegated || u == x509.ExtKeyUsageOCSPSigning
	}
	if !delegated {
		return fmt.Errorf("signed by certificate %s (serial %s), which %s did not make an OCSP responder (no id-kp-OCSPSigning)",
			Subject(rc), serialHex(rc), Subject(issuer))
	}
	if now.Add(ocspClockSkew).Before(rc.NotBefore) || now.Add(-ocspClockSkew).After(rc.NotAfter) {
		return fmt.Errorf("signed by responder certificate %s (serial %s), valid %s to %s only (local clock %s)",
			Subject(rc), serialHex(rc), rc.NotBefore.UTC().Format(time.RFC3339), rc.NotAfter.UTC().Format(time.RFC3339),
			now.UTC().Format(time.RFC3339))
	}
	return nil
}

// unwrapURLError drops net/http's `Post "URL": ` prefix: callers name the
// responder themselves.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
