//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package relay

import "io"

// deliverer is direct delivery to the plaintext socket (deliver_unix.go);
// on this platform the receive direction writes every frame itself.
type deliverer struct{}

// directDelivery says whether this platform has direct delivery.
const directDelivery = false

func newDeliverer(*relay) *deliverer { return nil }

func (d *deliverer) source(r *relay) io.Reader { return r.stream }

func (d *deliverer) closeWrite() {}
