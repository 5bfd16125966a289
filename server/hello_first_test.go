//go:build unix

package server

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestHelloCountedOnFirstRead: a ClientHello larger than the first read
// TLS asks for (about 512 bytes; a hello with a post-quantum key share is
// 1.5–2 KiB) that waits whole in the socket is taken out of it by that
// first read, and is counted whole there: from then on the gate can no
// longer see it in the socket, so a hello counted only at the next read
// left a window in which the gate took the connection for silent and
// evicted it (a partner's storm saw EOF). The bytes read are the bytes
// sent, in order, and a hello that arrives in two parts is counted only
// once whole.
func TestHelloCountedOnFirstRead(t *testing.T) {
	record := func(size int) []byte {
		b := make([]byte, 5+size)
		b[0], b[1], b[2], b[3], b[4] = 0x16, 0x03, 0x01, byte(size>>8), byte(size)
		for i := 5; i < len(b); i++ {
			b[i] = byte(i)
		}
		return b
	}
	ln := testnet.Listen(t)
	accept := func(t *testing.T) (client net.Conn, hc *helloConn, hellos *atomic.Int32) {
		t.Helper()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { server.Close() })
		hellos = new(atomic.Int32)
		hc = &helloConn{Conn: server, until: time.Now().Add(10 * time.Second), done: func() { hellos.Add(1) },
			reading: new(atomic.Int32)}
		hc.SetReadDeadline(time.Now().Add(10 * time.Second))
		return client, hc, hellos
	}
	// waitWhole waits until the server's socket holds n bytes of hello.
	waitWhole := func(t *testing.T, hc *helloConn) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !helloWaiting(hc.Conn) {
			if time.Now().After(deadline) {
				t.Fatal("the hello never arrived whole in the server's socket")
			}
			time.Sleep(time.Millisecond)
		}
	}

	t.Run("whole", func(t *testing.T) {
		client, hc, hellos := accept(t)
		hello := record(1800)
		client.Write(hello)
		waitWhole(t, hc)
		p := make([]byte, 512)
		n, err := hc.Read(p)
		if err != nil || n != 512 {
			t.Fatalf("first read: %d bytes, %v; want 512", n, err)
		}
		if hellos.Load() != 1 {
			t.Fatal("the whole hello left the socket at the first read but was not counted: the gate would take the connection for silent")
		}
		if hc.reading.Load() != readDone {
			t.Fatalf("reading = %d after the first read, want readDone", hc.reading.Load())
		}
		got := append([]byte(nil), p[:n]...)
		rest := make([]byte, len(hello)-n)
		if _, err := io.ReadFull(hc, rest); err != nil {
			t.Fatal(err)
		}
		if got = append(got, rest...); !bytes.Equal(got, hello) {
			t.Fatal("the bytes read are not the bytes sent")
		}
		if hellos.Load() != 1 || !hc.seen {
			t.Fatalf("hello counted %d times (seen %v), want once", hellos.Load(), hc.seen)
		}
	})

	t.Run("in two parts", func(t *testing.T) {
		client, hc, hellos := accept(t)
		hello := record(1800)
		client.Write(hello[:1000])
		p := make([]byte, 512)
		n, err := hc.Read(p)
		if err != nil || n == 0 {
			t.Fatalf("first read: %d bytes, %v", n, err)
		}
		got := append([]byte(nil), p[:n]...)
		for len(got) < 1000 {
			n, err := hc.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p[:n]...)
		}
		if hellos.Load() != 0 {
			t.Fatal("a hello counted whole after 1,000 of its 1,805 bytes")
		}
		client.Write(hello[1000:])
		for len(got) < len(hello) {
			n, err := hc.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p[:n]...)
		}
		if !bytes.Equal(got, hello) {
			t.Fatal("the bytes read are not the bytes sent")
		}
		if hellos.Load() != 1 {
			t.Fatalf("hello counted %d times, want once", hellos.Load())
		}
	})
}
