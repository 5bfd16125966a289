package agent

import (
	"crypto/tls"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
	"github.com/postern-tunnel/postern/relay"
	"github.com/postern-tunnel/postern/trust"
)

// rawConn is a live mux = false TLS connection. Like a tunnel it is
// rechecked when trust material changes, and cut when its peer no longer
// verifies.
type rawConn struct {
	c     *tls.Conn
	side  trust.Side         // this agent's role: SideServer accepted it, SideClient dialed it
	creds *trust.Credentials // of the [[server]] or [[client]] it belongs to
	where string             // for the log
}

// rawConns is the set of live raw connections. The zero value is ready.
type rawConns struct {
	mu sync.Mutex
	m  map[*rawConn]struct{}
}

// add registers rc until the returned function is called.
func (r *rawConns) add(rc *rawConn) (remove func()) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[*rawConn]struct{}{}
	}
	r.m[rc] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.m, rc)
		r.mu.Unlock()
	}
}

func (r *rawConns) list() []*rawConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*rawConn, 0, len(r.m))
	for rc := range r.m {
		out = append(out, rc)
	}
	return out
}

// recheckRaw cuts the live raw connections of the wanted endpoints whose
// peer no longer verifies: the TLS connection is dropped without
// close_notify, which resets the plaintext side too.
func (a *Agent) recheckRaw(want map[*trust.Credentials]bool, now time.Time) {
	for _, rc := range a.raws.list() {
		if !want[rc.creds] {
			continue
		}
		chain := rc.c.ConnectionState().PeerCertificates
		err := rc.creds.Recheck(chain, rc.side, now)
		if err == nil {
			continue
		}
		a.log.Warn("raw TLS connection cut: the peer no longer passes verification",
			"conn", rc.where, "peer", identity.Describe(chain[0]),
			"reason", trust.Explain(err, rc.side, rc.creds.Load().CASubjects, now))
		relay.ResetConn(rc.c.NetConn())
	}
}
