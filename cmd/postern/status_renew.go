package main

import (
	"fmt"
	"io"
	"time"

	"github.com/postern-tunnel/postern/agent"
)

// printRenewals writes the CERTIFICATE RENEWAL table of postern status:
// each certificate file, when it renews and how.
func printRenewals(w io.Writer, rs []agent.RenewalStatus, now time.Time) {
	fmt.Fprintf(w, "\nCERTIFICATE RENEWAL (%d)\n", len(rs))
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w, "CERT\tSERIAL\tEXPIRES\tRENEWS\tBY\tRENEWED\tLAST ERROR")
	for _, r := range rs {
		renews := "in " + until(now, r.RenewAt)
		if !r.NextAttempt.IsZero() {
			renews = "retry in " + until(now, r.NextAttempt)
		}
		last := r.LastError
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Cert, r.Serial, expires(now, r.NotAfter), renews, r.Signer, r.Renewals, last)
	}
}

func until(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "now"
	}
	return d.Round(time.Second).String()
}
