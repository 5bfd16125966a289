package agent

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/postern-tunnel/postern/tunnel"
	"github.com/postern-tunnel/postern/wire"
)

// Control exchanges between agents (docs/protocol.md, "Control
// exchanges"): one request and one reply on a stream of their own, for
// certificate renewal (renew.go, renew_sign.go) and CRL push (crlpush.go).

// controlTimeout bounds one control exchange, both ends.
const controlTimeout = 30 * time.Second

// askPeer sends a control request over t and returns the reply's payload.
// A reply other than OK is a *wire.ControlError; an agent that predates
// control exchanges gives wire.ErrControlUnsupported.
func askPeer(t *tunnel.Tunnel, op string, payload []byte) ([]byte, error) {
	msg, err := wire.AppendControl(nil, wire.ControlRequest{Op: op, Payload: payload})
	if err != nil {
		return nil, err
	}
	st, err := t.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: open stream: %w", op, err)
	}
	st.SetDeadline(time.Now().Add(controlTimeout))
	if _, err := st.Write(msg); err != nil {
		st.Reset()
		return nil, fmt.Errorf("%s: send request: %w", op, err)
	}
	rep, err := wire.ReadControlReply(st)
	if err != nil {
		st.Reset()
		return nil, fmt.Errorf("%s: read reply: %w", op, err)
	}
	st.Close()
	if rep.Code != wire.ControlOK {
		return nil, &wire.ControlError{Op: op, Reply: rep}
	}
	return rep.Payload, nil
}

// answerControl carries out a peer's control request on st and answers.
func (a *Agent) answerControl(t *tunnel.Tunnel, st *tunnel.Stream, req *wire.ControlRequest, log *slog.Logger) {
	log = log.With("control", req.Op)
	var rep wire.ControlReply
	switch req.Op {
	case wire.OpCAInfo:
		rep = a.answerCAInfo()
	case wire.OpCertRenew:
		rep = a.answerRenew(t, req.Payload, log)
	case wire.OpCRLPush:
		rep = a.answerCRLPush(t, req.Payload, log)
	case wire.OpCertUpdate:
		rep = a.answerCertUpdate(t, req.Payload, log)
	default:
		log.Info("control request refused", "reason", "unknown operation")
		rep = wire.ControlReply{Code: wire.ControlUnknownOp, Reason: fmt.Sprintf("unknown control operation %q", req.Op)}
	}
	b, err := wire.AppendControlReply(nil, rep)
	if err != nil {
		log.Warn("control reply does not fit the protocol's bound", "err", err)
		b, _ = wire.AppendControlReply(nil, wire.ControlReply{Code: wire.ControlRefused, Reason: "answer too large for a control reply"})
	}
	st.SetWriteDeadline(time.Now().Add(controlTimeout))
	if _, err := st.Write(b); err != nil {
		st.Reset()
		return
	}
	st.Close()
	st.Discard()
}

// controlOnConnect starts what a new tunnel needs from control exchanges:
// the [ca]'s CRL pushed to the peer, and a renewal that waits for a
// tunnel tried at once.
func (a *Agent) controlOnConnect(t *tunnel.Tunnel) {
	a.pushCRLTo(t)
	a.renew.tunnelUp() // a renewal waiting for a tunnel tries this one
}
