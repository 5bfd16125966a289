package trust

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
)

func TestOwnProblem(t *testing.T) {
	ca := testca.New(t, "Test CA")
	now := time.Now()
	for _, tc := range []struct {
		name string
		o    testca.Options
		side Side
		want string
	}{
		{"fine client", testca.Options{CN: "site-a"}, SideClient, ""},
		{"server usage on a client", testca.Options{CN: "site-a", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, SideClient,
			`our own certificate CN="site-a" lacks the clientAuth usage its peers require: reissue it with --usage client (or both)`},
		{"client usage on a server", testca.Options{CN: "hub", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, SideServer,
			`our own certificate CN="hub" lacks the serverAuth usage its peers require: reissue it with --usage server (or both)`},
		{"expired", testca.Options{CN: "hub", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-25 * time.Hour)}, SideServer,
			`our own certificate CN="hub" expired 1d1h ago`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := ca.Issue(t, tc.o)
			got := (&Material{Leaf: leaf.Cert}).OwnProblem(tc.side, now)
			if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
				t.Errorf("OwnProblem = %q, want it to start with %q", got, tc.want)
			}
		})
	}
	future := ca.Issue(t, testca.Options{CN: "hub", NotBefore: now.Add(2 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	if got := (&Material{Leaf: future.Cert}).OwnProblem(SideServer, now); got == "" || !contains(got, "is not valid until", "NTP") {
		t.Errorf("a certificate from the future: %q", got)
	}
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
