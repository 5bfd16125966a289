package main

import (
	"fmt"
	"strings"
	"time"

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
