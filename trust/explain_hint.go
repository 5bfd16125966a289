package trust

import (
	"fmt"
	"net"
)

// reissueHint says how to get a server certificate that is valid for host,
// the name or address a client checked it against.
func reissueHint(host string) string {
	if net.ParseIP(host) != nil {
		return fmt.Sprintf("issue one with --ip %s (postern pki issue or sign): a server dialled by IP address needs the address as an IP name, not --dns", host)
	}
	return fmt.Sprintf("issue a certificate for %q", host)
}
