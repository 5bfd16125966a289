package trust

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/wire"
)

// TestJudge: what a hub tells a client about its chain. Only chains that
// verify to a trusted CA (at some time within the leaf's validity) get a
// refusal; the others get an error and no words.
func TestJudge(t *testing.T) {
	ca := testca.New(t, "Partners CA")
	stranger := testca.New(t, "Stranger CA")
	now := time.Now()
	revoked := ca.Issue(t, testca.Options{CN: "site-r"})
	m, err := LoadMaterial(endpoint(t, ca, crlPEM(signCRL(t, ca, now.Add(time.Hour), revoked.Cert.SerialNumber))))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(m)
	pins, err := identity.ParseList([]string{"dns:partner-b.test", "cn:site-a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		leaf  *testca.Leaf
		peers identity.List
		code  wire.RefusalCode
		words string // "" with code none; "error" when the chain does not verify
	}{
		{"accepted", ca.Issue(t, testca.Options{CN: "site-a"}), nil, wire.RefusalNone, ""},
		{"accepted by peer", ca.Issue(t, testca.Options{CN: "site-a"}), pins, wire.RefusalNone, ""},
		{"expired", ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-10 * time.Minute)}), nil,
			wire.RefusalExpired, `client certificate CN="site-a" expired 10m`},
		{"not yet valid", ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(2 * time.Hour), NotAfter: now.Add(48 * time.Hour)}), nil,
			wire.RefusalNotYetValid, `client certificate CN="site-a" is not valid yet`},
		{"revoked", revoked, nil, wire.RefusalRevoked, `client certificate CN="site-r" was revoked`},
		{"not in peer", ca.Issue(t, testca.Options{CN: "site-c"}), pins, wire.RefusalIdentity,
			`client certificate CN="site-c" matches none of the identities the server accepts (peer; not shown to the client): it has "cn:site-c"`},
		{"unknown CA", stranger.Issue(t, testca.Options{CN: "site-a"}), nil, 0, "error"},
		{"unknown CA, expired", stranger.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-10 * time.Minute)}), nil, 0, "error"},
		{"server usage only", ca.Issue(t, testca.Options{CN: "site-a", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), nil, 0, "error"},
		{"expired, server usage only", ca.Issue(t, testca.Options{CN: "site-a", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-10 * time.Minute), Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), nil, 0, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Judge(m, []*x509.Certificate{tc.leaf.Cert}, tc.peers, now)
			if tc.words == "error" {
				if err == nil {
					t.Errorf("Judge = %+v, want an error for a chain that does not verify", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Code != tc.code || !strings.HasPrefix(r.Reason, tc.words) || (tc.words == "") != (r.Reason == "") {
				t.Errorf("Judge = %+v, want code %s and a reason starting %q", r, tc.code, tc.words)
			}
			if strings.Contains(r.Reason, "partner-b") || strings.Contains(r.Reason, "trusted:") {
				t.Errorf("reason tells about other partners: %q", r.Reason)
			}
			if len(r.Reason) > wire.MaxRefusalReason || wire.CleanReason(r.Reason) != r.Reason {
				t.Errorf("reason does not fit a refusal message as it is: %q", r.Reason)
			}
		})
	}
}
