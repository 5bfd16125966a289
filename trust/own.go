package trust

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// OwnProblem says what makes this endpoint's own certificate unacceptable
// to its peers at now, or "": not valid yet, expired, or without the
// extended key usage the other side requires (clientAuth for a client,
// serverAuth for a server).
func (m *Material) OwnProblem(side Side, now time.Time) string {
	c := m.Leaf
	if c == nil {
		return ""
	}
	switch {
	case now.Before(c.NotBefore):
		return fmt.Sprintf("our own certificate %s is not valid until %s (local clock %s): check this host's clock (NTP), or issue one valid now",
			Subject(c), c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Sprintf("our own certificate %s expired %s ago (not after %s): renew it",
			Subject(c), RoundDuration(now.Sub(c.NotAfter)), c.NotAfter.UTC().Format(time.RFC3339))
	}
	want, flag := x509.ExtKeyUsageClientAuth, "client"
	if side == SideServer {
		want, flag = x509.ExtKeyUsageServerAuth, "server"
	}
	if len(c.ExtKeyUsage) > 0 && !slices.Contains(c.ExtKeyUsage, want) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return fmt.Sprintf("our own certificate %s lacks the %sAuth usage its peers require: reissue it with --usage %s (or both)",
			Subject(c), flag, flag)
	}
	return ""
}

// Explain is the package's Explain for a handshake of this endpoint, with
// this endpoint's trusted CAs; when the peer rejected our certificate and
// OwnProblem finds a reason, it is added as the likely one.
func (c *Credentials) Explain(err error, side Side, now time.Time) string {
	m := c.Load()
	msg := Explain(err, side, m.CASubjects, now)
	if strings.Contains(msg, "rejected our certificate") {
		if p := m.OwnProblem(side, now); p != "" {
			msg += " (" + p + " — likely this)"
		}
	}
	return msg
}
