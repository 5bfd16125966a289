package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/postern-tunnel/postern/trust"
)

func TestClassify(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name   string
		err    error
		silent bool
		want   Cause
	}{
		{"closed without a byte", io.EOF, true, CauseProbe},
		{"reset without a byte", reset, true, CauseProbe},
		{"closed mid-handshake", io.ErrUnexpectedEOF, false, CauseClosed},
		{"reset mid-handshake", reset, false, CauseClosed},
		{"deadline", context.DeadlineExceeded, true, CauseTimeout},
		{"read deadline", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false, CauseTimeout},
		{"junk", tls.RecordHeaderError{RecordHeader: [5]byte{0x17, 0x99, 0x42, 0, 1}}, false, CauseNotTLS},
		{"http", tls.RecordHeaderError{RecordHeader: [5]byte{'G', 'E', 'T', ' ', '/'}}, false, CauseHTTP},
		{"unknown CA", &tls.CertificateVerificationError{Err: errors.New("x509: certificate signed by unknown authority")}, false, CauseCertificate},
		{"revoked", fmt.Errorf("handshake: %w", &trust.RevokedError{}), false, CauseCertificate},
		{"no certificate", errors.New("tls: client didn't provide a certificate"), false, CauseCertificate},
		{"alert", &net.OpError{Op: "remote error", Err: tls.AlertError(42)}, false, CauseRejected},
		{"version", errors.New("tls: client offered only unsupported versions: [303]"), false, CauseProtocol},
		{"cipher", errors.New("tls: no cipher suite supported by both client and server"), false, CauseProtocol},
		{"alpn", errors.New("tls: client requested unsupported application protocols ([h2])"), false, CauseProtocol},
		// Attacker-chosen words never make a cause of their own.
		{"anything else", errors.New("tls: unexpected message \x00\xff chosen by the peer"), false, CauseOther},
	} {
		if got := classify(tc.err, tc.silent); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
