package wire

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
)

func FuzzReadOpen(f *testing.F) {
	for _, req := range []OpenRequest{
		{Service: "erp-db"},
		{Service: "erp-db", Source: "192.0.2.7:51234", Destination: "127.0.0.1:15432"},
		{Service: "a.b_c", Destination: "[::1]:1"},
	} {
		b, err := AppendOpen(nil, req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 1, 0, 9, 3, 'e', 'r', 'p', 9, 3, 'x', 'y', 'z'}) // unknown tag
	f.Add([]byte{1, 1, 0, 5, 3, 'e', 'r', 'p', 1})                   // truncated metadata
	f.Add([]byte{1, 1, 0, 4, 3, 'a', ' ', 'b'})                      // bad character
	f.Add([]byte{2, 1, 0, 0})
	f.Add([]byte{1, 1, 4, 1})
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		req, err := ReadOpen(r)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		if consumed := len(data) - r.Len(); consumed > 4+maxOpenBody {
			t.Fatalf("read %d bytes for one open request", consumed)
		}
		// What reaches logs and PROXY headers is a valid name and ip:port.
		if CheckServiceName(req.Service) != nil || req.Service == "" {
			t.Fatalf("accepted service name %q", req.Service)
		}
		for _, a := range []string{req.Source, req.Destination} {
			if _, err := netip.ParseAddrPort(a); a != "" && err != nil {
				t.Fatalf("accepted address %q: %v", a, err)
			}
		}
		b, err := AppendOpen(nil, req)
		if err != nil {
			t.Fatalf("accepted %+v but cannot encode it: %v", req, err)
		}
		again, err := ReadOpen(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-encoded %+v does not parse: %v", req, err)
		}
		if again != req {
			t.Fatalf("round trip changed %+v to %+v", req, again)
		}
	})
}

func FuzzReadStatus(f *testing.F) {
	f.Add(AppendStatus(nil, Status{Code: StatusOK}))
	f.Add(AppendStatus(nil, Status{Code: StatusNotAllowed, Reason: "not allowed for dns:a.example.com"}))
	f.Add([]byte{1, 2, 0, 0})
	f.Add([]byte{1, 2, 1, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ReadStatus(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		for i := 0; i < len(st.Reason); i++ {
			if c := st.Reason[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("reason %q carries control byte %#x", st.Reason, c)
			}
		}
		again, err := ReadStatus(bytes.NewReader(AppendStatus(nil, st)))
		if err != nil || again != st {
			t.Fatalf("round trip of %+v: %+v, %v", st, again, err)
		}
	})
}

// FuzzFrameReader decodes arbitrary bytes as a frame stream, delivered all
// at once or a byte at a time. Accepted frames must re-encode to exactly
// the bytes they came from, and the stream must end in a known error.
func FuzzFrameReader(f *testing.F) {
	var seed []byte
	seed = append(seed, encodeFrame(FrameData, []byte("hello"))...)
	seed = append(seed, encodeFrame(FrameCloseWrite, nil)...)
	seed = AppendAbort(seed, AbortReset, "reset")
	f.Add(seed, false)
	f.Add(seed, true)
	// A header announcing more than a pooled buffer holds (the reader moves
	// to a private buffer), then the stream ends: small, so the fuzzer's
	// minimiser does not stall on a 70 KiB seed.
	f.Add([]byte{FrameData, 0x01, 0x18, 0x00, 'x', 'y'}, false)
	f.Add([]byte{FrameData, 0, 0, 0}, false)
	f.Add([]byte{FrameCloseWrite, 0, 0, 1, 0}, false)
	f.Add([]byte{FrameAbort, 0, 0, 3, 1, 'x'}, true)
	f.Add([]byte{7, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, data []byte, oneByte bool) {
		var r io.Reader = bytes.NewReader(data)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		fr := NewFrameReader(r)
		defer fr.Release()
		var reencoded []byte
		var err error
		for {
			var fm Frame
			fm, err = fr.Next()
			if err != nil {
				break
			}
			switch fm.Type {
			case FrameData:
				if len(fm.Payload) == 0 || len(fm.Payload) > MaxFramePayload {
					t.Fatalf("accepted DATA of %d bytes", len(fm.Payload))
				}
			case FrameCloseWrite:
				if len(fm.Payload) != 0 {
					t.Fatalf("accepted CLOSE_WRITE with %d bytes", len(fm.Payload))
				}
			case FrameAbort:
				code, reason := fm.AbortInfo()
				if AbortCode(fm.Payload[0]) != code || len(reason) != len(fm.Payload)-1 {
					t.Fatalf("ABORT %x decoded as %d %q", fm.Payload, code, reason)
				}
			default:
				t.Fatalf("accepted frame type %d", fm.Type)
			}
			reencoded = append(reencoded, encodeFrame(fm.Type, fm.Payload)...)
		}
		if !bytes.HasPrefix(data, reencoded) {
			t.Fatalf("accepted frames re-encode to %x, not a prefix of the input %x", reencoded, data)
		}
		switch {
		case err == io.EOF:
			if len(reencoded) != len(data) {
				t.Fatalf("io.EOF after %d of %d bytes", len(reencoded), len(data))
			}
		case err == io.ErrUnexpectedEOF:
			if len(reencoded) == len(data) {
				t.Fatal("io.ErrUnexpectedEOF at a frame boundary")
			}
		case errors.Is(err, ErrProtocol):
		default:
			t.Fatalf("unexpected kind of error: %v", err)
		}
	})
}
