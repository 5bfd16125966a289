package agent

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/config"
	"github.com/postern-tunnel/postern/tunnel"
	"golang.org/x/time/rate"
)

// A paced stream's data is all read through its Read, which paces it: it
// is never handed over on the tunnel's receive goroutine (tunnel.Stream's
// SetDeliver), which would skip the pacing.
func TestPacedStreamIsNotDeliveredAround(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	conn := <-accepted
	if conn == nil {
		t.Fatal("accept failed")
	}
	defer conn.Close()
	var c config.Config
	c.SetDefaults()
	opts := tunnel.OptionsOf(c.Tunnel)
	client, err := tunnel.New(dialed, true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := tunnel.New(conn, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	opened, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opened.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	st, err := server.Accept()
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(st, one); err != nil {
		t.Fatal(err)
	}

	a := &Agent{relayCtx: context.Background()}
	paced := a.paced(st, &pacers{in: []*rate.Limiter{newPacer(1 << 20)}})
	ds, ok := paced.(interface {
		SetDeliver(func([]byte) int)
		WaitDeliver() error
	})
	if !ok {
		return // nothing offered to deliver around Read
	}
	delivered := 0
	ds.SetDeliver(func(p []byte) int { delivered += len(p); return len(p) })
	go opened.Write([]byte("hello"))
	paced.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ds.WaitDeliver(); err != nil {
		t.Fatalf("wait: %v (delivered %d bytes around Read)", err, delivered)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(paced, got); err != nil || string(got) != "hello" || delivered != 0 {
		t.Fatalf("read %q, %v; %d bytes delivered around Read; want \"hello\" through Read", got, err, delivered)
	}
}
