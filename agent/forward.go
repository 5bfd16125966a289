package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/postern-tunnel/postern/client"
	"github.com/postern-tunnel/postern/tunnel"
)

// forward is a plaintext listener whose connections become streams to a
// service on the peer.
type forward struct {
	agent   *Agent
	ln      net.Listener
	service string
	via     string
	client  *client.Client
	wait    time.Duration // for a tunnel, when none is up
}

func (f *forward) serve(ctx context.Context) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if isClosed(err) || ctx.Err() != nil {
				return
			}
			f.agent.log.Warn(fmt.Sprintf("forward %s: accept: %v", f.ln.Addr(), err))
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		f.agent.streams.Add()
		go func() {
			defer f.agent.streams.Done()
			f.handle(c)
		}()
	}
}

// handle carries one plaintext connection to the peer. The application's
// first bytes travel right behind the open request; the peer's bytes reach
// the application only after the peer said OK.
func (f *forward) handle(c net.Conn) {
	a := f.agent
	head := fmt.Sprintf("forward %s → %s/%s", f.ln.Addr(), f.via, f.service)
	log := a.log.With("client", c.RemoteAddr().String())
	ctx, cancel := context.WithTimeout(a.relayCtx, f.wait)
	t, err := f.client.Tunnel(ctx)
	cancel()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: no tunnel up within %s (%v)", head, c.RemoteAddr(), f.wait, err))
		tunnel.ResetConn(c)
		return
	}
	st, err := t.Session.OpenStream()
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: open stream: %v", head, c.RemoteAddr(), err))
		tunnel.ResetConn(c)
		return
	}
	head = fmt.Sprintf("stream %d %s", st.StreamID(), head)
	req, err := tunnel.AppendOpen(nil, tunnel.OpenRequest{
		Service: f.service, Source: c.RemoteAddr().String(), Destination: c.LocalAddr().String(),
	})
	if err == nil {
		_, err = st.Write(req)
	}
	if err != nil {
		log.Warn(fmt.Sprintf("%s: connection from %s reset: %v", head, c.RemoteAddr(), err))
		tunnel.ResetConn(c)
		st.Close()
		return
	}
	openTimeout := a.cfg.Tunnel.OpenTimeout.D()
	awaitStatus := func() error {
		st.SetReadDeadline(time.Now().Add(openTimeout))
		s, err := tunnel.ReadStatus(st)
		st.SetReadDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("no answer from peer within %s: %w", openTimeout, err)
		}
		if s.Code != tunnel.StatusOK {
			return &tunnel.RefusedError{Status: s}
		}
		return nil
	}
	stats, err := tunnel.Relay(a.relayCtx, c, st, awaitStatus)
	if refused, ok := asRefused(err); ok {
		log.Warn(fmt.Sprintf("%s: %v", head, refused))
		return
	}
	a.logRelayEnd(log, head, stats, err)
}

func asRefused(err error) (*tunnel.RefusedError, bool) {
	var r *tunnel.RefusedError
	ok := errors.As(err, &r)
	return r, ok
}
