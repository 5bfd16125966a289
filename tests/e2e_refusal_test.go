//go:build unix

package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestE2ERefusalReason: with the built binary, a site refused by the hub
// for a certificate that verifies to the hub's CA logs the hub's own
// reason (the words of the hub's "tunnel refused" line), minus the hub's
// list of accepted identities: a certificate revoked with `postern pki
// revoke`, and one the [[server]]'s peer does not name.
func TestE2ERefusalReason(t *testing.T) {
	e2eBinary(t)
	for _, tc := range []struct {
		name   string
		revoke bool
		peer   string
		words  string
	}{
		{"revoked", true, `"dns:site-a.test"`, `client certificate CN="site-a" was revoked on `},
		{"identity", false, `"dns:partner-b.test", "cn:Partner C"`, `client certificate CN="site-a" matches none of peer = [dns:partner-b.test, cn:Partner C]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := faultNewPKI(t)
			if tc.revoke {
				pki.run(t, "revoke", pki.siteCert)
			}
			hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, pki.dir, "hub", fmt.Sprintf(`name = "hub"
[tls]
cert = %q
key = %q
ca = %q
crl = [%q]
[[server]]
listen = "127.0.0.1:0"
peer = [%s]
[log]
format = "json"
`, pki.hubCert, pki.hubKey, pki.ca, pki.crl, tc.peer)))
			hubAddr := hub.log.WaitMatch(t, 10*time.Second, regexp.MustCompile(`"msg":"tunnel server listening","listen":"([^"]+)"`))[1]
			site := e2eStartAgent(t, "site", e2eWriteConfig(t, pki.dir, "site", fmt.Sprintf(`name = "site-a"
[tls]
cert = %q
key = %q
ca = %q
[[client]]
name = "hub"
servers = [%q]
server_name = "hub.test"
backoff_min = "50ms"
backoff_max = "500ms"
[log]
format = "json"
`, pki.siteCert, pki.siteKy, pki.ca, hubAddr)))

			var hubRec, siteRec struct{ Cause, Reason, Err string }
			if err := json.Unmarshal([]byte(hub.log.WaitFor(t, 10*time.Second, `"msg":"tunnel refused"`)), &hubRec); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(site.log.WaitFor(t, 10*time.Second, `"msg":"tunnel not connected; retrying"`)), &siteRec); err != nil {
				t.Fatal(err)
			}
			if hubRec.Cause != "certificate" || !strings.HasPrefix(hubRec.Reason, tc.words) {
				t.Errorf("hub: cause %q, reason %q; want certificate, %q…", hubRec.Cause, hubRec.Reason, tc.words)
			}
			want := hubAddr + ": hub refused this agent's certificate: " + strings.Replace(hubRec.Reason,
				"matches none of peer = [dns:partner-b.test, cn:Partner C]", "matches none of the identities the server accepts (peer; not shown to the client)", 1)
			if siteRec.Err != want {
				t.Errorf("site logged:\n  %s\nwant the hub's reason:\n  %s", siteRec.Err, want)
			}
			if strings.Contains(siteRec.Err, "partner-b") || strings.Contains(site.log.String(), "tunnel connected") {
				t.Errorf("site learned the hub's peer list or got a tunnel; site log:\n%s", site.log)
			}
		})
	}
}
