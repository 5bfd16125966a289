package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/hsm"
	"github.com/postern-tunnel/postern/pki"
	"github.com/postern-tunnel/postern/trust"
)

// checkRenewal says when the endpoint's certificate renews and who signs
// it: the agent's own [ca], or a peer's over a tunnel (docs/certificates.md,
// "Renewal over the tunnel").
func checkRenewal(r *checkReport, cfg *config.Config, t config.TLS) {
	if hsm.IsURI(t.Cert) || hsm.IsURI(t.Key) {
		r.note("renewal: the key is in a PKCS#11 token; Postern does not renew it (make the new key in the token)")
		return
	}
	_, leaf, err := trust.LoadKeyPair(t.Cert, t.Key)
	if err != nil {
		return // checkEndpoint said why
	}
	before, how := t.RenewBefore.D(), "renew_before "+trust.RoundDuration(t.RenewBefore.D())
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if before <= 0 || before >= life {
		before, how = life/3, "a third of its lifetime"
	}
	at := leaf.NotAfter.Add(-before)
	when := fmt.Sprintf("renews at %s (%s before expiry: %s)", stamp(at), trust.RoundDuration(before), how)
	if d := at.Sub(r.now); d > 0 {
		when += fmt.Sprintf(", in %s", trust.RoundDuration(d))
	} else {
		when += ", due now"
	}
	if cfg.CA != nil {
		if ca, err := pki.Open(cfg.CA.Dir); err == nil && leaf.CheckSignatureFrom(ca.Cert) == nil {
			r.ok("renewal: cert %s %s, signed by the local [ca] %s", checkName(t.Cert), when, cfg.CA.Dir)
			return
		}
	}
	var tunnels []string
	for _, c := range cfg.Clients {
		tunnels = append(tunnels, fmt.Sprintf("%q", c.Name))
	}
	over := "a tunnel a peer opens to this agent"
	if len(tunnels) > 0 {
		over = "tunnel " + strings.Join(tunnels, ", ") + " (or one a peer opens)"
	}
	r.ok("renewal: cert %s %s, over %s, by the peer whose [ca] issued it (%s; its [ca] renew must be on)",
		checkName(t.Cert), when, over, issuerOf(leaf))
	if left := leaf.NotAfter.Sub(r.now); left > 0 && left < before && left < time.Hour {
		r.warn("renewal: cert %s expires in %s: if no tunnel to its CA's agent comes up, renew it by hand (postern pki issue --renew)", checkName(t.Cert), trust.RoundDuration(left))
	}
}

// checkRunningRenewals reports what the running agent of the config file
// (found as postern status finds it) says about its renewals: a renewal
// that keeps failing is a warning with the agent's last error and the time
// the certificate has left; one waiting for a tunnel or a signer, a note.
// Without a running agent it says nothing: the file checks above stand.
func checkRunningRenewals(r *checkReport, path string) {
	c, err := controlFor(path, "check", io.Discard)
	if err != nil {
		return
	}
	var st agent.Status
	if _, err := c.do(http.MethodGet, "/status", &st); err != nil || len(st.Renewals) == 0 {
		return
	}
	r.section("renewals in the running agent %s (%s)", st.Agent, c.where)
	for _, rs := range st.Renewals {
		left := "expired " + trust.RoundDuration(r.now.Sub(rs.NotAfter)) + " ago"
		if rs.NotAfter.After(r.now) {
			left = "expires in " + trust.RoundDuration(rs.NotAfter.Sub(r.now))
		}
		switch {
		case rs.Failures > 0:
			r.warn("renewal: cert %s (serial %s, %s) failed %d time(s) in a row, next attempt in %s: %s",
				checkName(rs.Cert), rs.Serial, left, rs.Failures, r.in(rs.NextAttempt), rs.LastError)
		case rs.LastError != "":
			r.note("renewal: cert %s (serial %s, %s): %s", checkName(rs.Cert), rs.Serial, left, rs.LastError)
		default:
			r.ok("renewal: cert %s (serial %s, %s) renewed %d time(s) since the agent started, next in %s",
				checkName(rs.Cert), rs.Serial, left, rs.Renewals, r.in(rs.RenewAt))
		}
	}
}

// in is how long until t, as the check says it: "now" when t has passed.
func (r *checkReport) in(t time.Time) string {
	if !t.After(r.now) {
		return "now"
	}
	return trust.RoundDuration(t.Sub(r.now))
}
