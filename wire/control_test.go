package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestControlRoundTrip(t *testing.T) {
	for _, req := range []ControlRequest{
		{Op: OpCAInfo},
		{Op: OpCertRenew, Payload: []byte("csr bytes")},
		{Op: OpCRLPush, Payload: bytes.Repeat([]byte{0xab}, MaxControlBody-1-len(OpCRLPush))},
	} {
		b, err := AppendControl(nil, req)
		if err != nil {
			t.Fatal(err)
		}
		// Frames after the request stay unread.
		r := bytes.NewReader(append(b, 0xff))
		open, ctl, err := ReadRequest(r)
		if err != nil || ctl == nil || open.Service != "" {
			t.Fatalf("ReadRequest(%s) = %+v, %v, %v", req.Op, open, ctl, err)
		}
		if ctl.Op != req.Op || !bytes.Equal(ctl.Payload, req.Payload) || r.Len() != 1 {
			t.Fatalf("round trip of %s: got %q with %d payload bytes, %d left", req.Op, ctl.Op, len(ctl.Payload), r.Len())
		}
	}
	// An open request still reads as one.
	b, _ := AppendOpen(nil, OpenRequest{Service: "erp-db"})
	open, ctl, err := ReadRequest(bytes.NewReader(b))
	if err != nil || ctl != nil || open.Service != "erp-db" {
		t.Fatalf("open request read as %+v, %+v, %v", open, ctl, err)
	}
}

func TestControlLimits(t *testing.T) {
	if _, err := AppendControl(nil, ControlRequest{Op: OpCRLPush, Payload: make([]byte, MaxControlBody)}); err == nil ||
		!strings.Contains(err.Error(), "exceed the limit of 65535") {
		t.Errorf("oversized request: %v", err)
	}
	for _, op := range []string{"", "Cert.Renew", "a b", strings.Repeat("x", 65)} {
		if _, err := AppendControl(nil, ControlRequest{Op: op}); err == nil {
			t.Errorf("operation %q encoded", op)
		}
	}
	if _, err := AppendControlReply(nil, ControlReply{Payload: make([]byte, MaxControlBody)}); err == nil {
		t.Error("oversized reply encoded")
	}
	b, _ := AppendControlReply(nil, ControlReply{Code: ControlRefused, Reason: strings.Repeat("r", 300)})
	rep, err := ReadControlReply(bytes.NewReader(b))
	if err != nil || len(rep.Reason) != maxReason || rep.Code != ControlRefused {
		t.Errorf("long reason: %d bytes, %v, %v", len(rep.Reason), rep.Code, err)
	}
}

// TestControlOldAcceptor: an acceptor that predates control exchanges
// reads a control request as a bad open request and answers with a
// protocol-error status, which the opener reports as unsupported.
func TestControlOldAcceptor(t *testing.T) {
	b, _ := AppendControl(nil, ControlRequest{Op: OpCAInfo})
	_, err := ReadOpen(bytes.NewReader(b))
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "unexpected message type 3") {
		t.Fatalf("old acceptor: %v", err)
	}
	status := AppendStatus(nil, Status{Code: StatusProtocolError, Reason: "malformed open request"})
	_, err = ReadControlReply(bytes.NewReader(status))
	if !errors.Is(err, ErrControlUnsupported) || !strings.Contains(err.Error(), "malformed open request") {
		t.Fatalf("reply from an old acceptor: %v", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, req := range []ControlRequest{{Op: OpCAInfo}, {Op: OpCertRenew, Payload: []byte{0x30, 0x82, 0, 1}}} {
		b, _ := AppendControl(nil, req)
		f.Add(b)
	}
	b, _ := AppendOpen(nil, OpenRequest{Service: "erp-db", Source: "192.0.2.7:1"})
	f.Add(b)
	f.Add([]byte{1, 3, 0, 1, 0})
	f.Add([]byte{1, 3, 0, 3, 5, 'a', 'b'})
	f.Add([]byte{1, 3, 0, 2, 1, 'A'})
	f.Add([]byte{1, 4, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		open, ctl, err := ReadRequest(r)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		consumed := len(data) - r.Len()
		if consumed > msgHeaderSize+MaxControlBody {
			t.Fatalf("read %d bytes for one request", consumed)
		}
		if ctl == nil {
			if CheckServiceName(open.Service) != nil || open.Service == "" {
				t.Fatalf("accepted service name %q", open.Service)
			}
			return
		}
		if checkOperation(ctl.Op) != nil {
			t.Fatalf("accepted operation %q", ctl.Op)
		}
		enc, err := AppendControl(nil, *ctl)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", ctl.Op, err)
		}
		if !bytes.Equal(enc, data[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, data[:consumed])
		}
	})
}

func FuzzReadControlReply(f *testing.F) {
	b, _ := AppendControlReply(nil, ControlReply{Code: ControlRefused, Reason: "revoked", Payload: []byte("x")})
	f.Add(b)
	f.Add(AppendStatus(nil, Status{Code: StatusProtocolError, Reason: "old"}))
	f.Add([]byte{1, 4, 0, 2, 0, 9})
	f.Add([]byte{1, 4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		rep, err := ReadControlReply(r)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrControlUnsupported) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		if len(rep.Reason) > maxReason || strings.ContainsFunc(rep.Reason, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("reason %q not bounded or not printable", rep.Reason)
		}
		enc, err := AppendControlReply(nil, rep)
		if err != nil {
			t.Fatalf("accepted reply cannot be encoded: %v", err)
		}
		again, err := ReadControlReply(bytes.NewReader(enc))
		if err != nil || again.Code != rep.Code || again.Reason != rep.Reason || !bytes.Equal(again.Payload, rep.Payload) {
			t.Fatalf("round trip changed %+v to %+v (%v)", rep, again, err)
		}
	})
}
