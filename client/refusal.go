package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/postern-tunnel/postern/trust"
	"github.com/postern-tunnel/postern/wire"
)

// refusalTimeout bounds a refusal-reason connection when the caller's
// deadline is further away.
const refusalTimeout = 10 * time.Second

// AskRefusal connects to addr once more to ask why the server refused our
// certificate (docs/protocol.md, "Refusal reasons"): a TLS connection with
// cfg's certificate and checks of the server (name, pins) that offers only
// wire.RefusalALPN, and one refusal message read from it. A server that
// does not explain refusals (not Postern, or an older one) fails the
// handshake or picks no protocol: an error.
func AskRefusal(ctx context.Context, dial DialFunc, addr string, cfg *tls.Config) (wire.Refusal, error) {
	ctx, cancel := context.WithTimeout(ctx, refusalTimeout)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return wire.Refusal{}, fmt.Errorf("connect: %w", UnwrapOp(err))
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{wire.RefusalALPN}
	cfg.ClientSessionCache = nil
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return wire.Refusal{}, fmt.Errorf("refusal reason: handshake: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != wire.RefusalALPN {
		return wire.Refusal{}, fmt.Errorf("refusal reason: the server does not speak %s", wire.RefusalALPN)
	}
	r, err := wire.ReadRefusal(tc)
	if err != nil {
		return wire.Refusal{}, fmt.Errorf("refusal reason: %w", err)
	}
	return r, nil
}

// ExplainRefusal turns err, from a handshake or first read of a
// connection to addr, into the sentence people read. When the server
// refused our certificate with an alert, the server is asked why, and a
// reason it gives replaces the alert's generic advice.
func ExplainRefusal(ctx context.Context, err error, creds *trust.Credentials, dial DialFunc, addr string, cfg *tls.Config) string {
	msg := creds.Explain(err, trust.SideClient, time.Now())
	if !trust.RefusedCertificate(err) || cfg == nil {
		return msg
	}
	r, aerr := AskRefusal(ctx, dial, addr, cfg)
	if aerr != nil || r.Code == wire.RefusalNone {
		return msg
	}
	return trust.RefusedMessage(r)
}

// refusalError explains a refused handshake or first read of a connection
// to addr, asking the server why when it refused our certificate.
func (c *Client) refusalError(ctx context.Context, err error, addr string, mux bool) error {
	ctx, cancel := c.refusalContext(ctx)
	defer cancel()
	return errors.New(ExplainRefusal(ctx, err, c.Creds, c.Dial, addr, c.tlsConfig(addr, mux)))
}

// refusalContext bounds a refusal-reason connection by dial_timeout.
func (c *Client) refusalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.DialTimeout > 0 {
		return context.WithTimeout(ctx, c.DialTimeout)
	}
	return context.WithCancel(ctx)
}

// RefusalReason asks addr why it refused our certificate, for a raw
// connection (mux = false) that learned of the refusal on its first read.
func (c *Client) RefusalReason(ctx context.Context, err error, addr string) (string, bool) {
	if !trust.RefusedCertificate(err) {
		return "", false
	}
	ctx, cancel := c.refusalContext(ctx)
	defer cancel()
	r, aerr := AskRefusal(ctx, c.Dial, addr, c.tlsConfig(addr, false))
	if aerr != nil || r.Code == wire.RefusalNone {
		return "", false
	}
	return trust.RefusedMessage(r), true
}
