package agent

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"

	"github.com/postern-tunnel/postern/identity"
)

// lazyLog returns l with attributes that are kept as they are and
// formatted only when a line is written. slog's handlers format a
// logger's attributes when With is called, and a connection's logger
// lives as long as the connection: for a held connection that was most
// of a kilobyte of heap for lines that are rarely written.
func lazyLog(l *slog.Logger) *slog.Logger {
	return slog.New(&lazyHandler{h: l.Handler()})
}

// lazyHandler holds With's attributes unformatted until a record is
// handled. Groups are rare on connection loggers: WithGroup formats what
// it holds and starts over under the group.
type lazyHandler struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (l *lazyHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	if len(l.attrs) == 0 {
		return l.h.Handle(ctx, r)
	}
	return l.h.WithAttrs(l.attrs).Handle(ctx, r)
}

func (l *lazyHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return l
	}
	all := make([]slog.Attr, 0, len(l.attrs)+len(attrs))
	return &lazyHandler{h: l.h, attrs: append(append(all, l.attrs...), attrs...)}
}

func (l *lazyHandler) WithGroup(name string) slog.Handler {
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return &lazyHandler{h: h.WithGroup(name)}
}

// peerValue is a peer certificate as a log value: identity.Describe, which
// hashes the certificate, runs only when a line that carries it is written.
type peerValue struct{ cert *x509.Certificate }

func (p peerValue) LogValue() slog.Value { return slog.StringValue(identity.Describe(p.cert)) }

// addrValue is a connection's address as a log value, formatted only when
// a line that carries it is written: a connection's addresses were a
// dozen allocations per connection for lines that are rarely written.
type addrValue struct{ a net.Addr }

func (v addrValue) LogValue() slog.Value { return slog.StringValue(v.a.String()) }
