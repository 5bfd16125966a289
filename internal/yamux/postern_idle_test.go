package yamux

// Postern: tests of what an idle session costs (idle.go): the keepalive
// that pings only a silent peer, the accept backlog that grows with use,
// and Serve and OnClose, which let a session be served without a
// goroutine waiting in Accept.

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

func pingsSent(s *Session) uint32 {
	s.pingLock.Lock()
	defer s.pingLock.Unlock()
	return s.pingID
}

// TestKeepAliveOnlyWhenSilent: a session that hears its peer sends no
// keepalive of its own; once the peer falls silent it pings, and a peer
// that no longer answers ends the session with ErrKeepAliveTimeout.
func TestKeepAliveOnlyWhenSilent(t *testing.T) {
	c1, c2 := testConnPipe(t)
	quietConf := testConfNoKeepAlive()
	quietConf.ConnectionWriteTimeout = time.Hour
	_ = captureLogs(quietConf)
	peer, err := Client(c1, quietConf)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conf := testConf()
	conf.KeepAliveInterval = time.Second
	conf.KeepAliveOnlyWhenSilent = true
	logs := captureLogs(conf)
	s, err := Server(c2, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// The peer pings every 10ms for more than an interval: s hears it
	// and stays quiet.
	for i := 0; i < 150; i++ {
		if _, err := peer.Ping(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // the pace of the peer's traffic, not a wait for a condition
	}
	if n := pingsSent(s); n != 0 {
		t.Fatalf("a session that heard its peer every 10ms sent %d keepalives (interval 1s)", n)
	}

	// The peer falls silent: s pings, and the peer answers.
	waitUntil(t, 5*time.Second, "a keepalive to a silent peer", func() bool { return pingsSent(s) > 0 })
	if s.IsClosed() {
		t.Fatal("an answered keepalive closed the session")
	}

	// The peer stops answering: s ends the session.
	c1.(*pipeConn).writeBlocker.Lock()
	defer c1.(*pipeConn).writeBlocker.Unlock()
	waitUntil(t, 5*time.Second, "the session closed after an unanswered keepalive", s.IsClosed)
	s.shutdownErrLock.Lock()
	ended := s.shutdownErr
	s.shutdownErrLock.Unlock()
	if ended != ErrKeepAliveTimeout {
		t.Fatalf("session ended with %v, want %v", ended, ErrKeepAliveTimeout)
	}
	if !logs.match([]string{"[ERR] yamux: keepalive failed: i/o deadline reached"}) {
		t.Fatalf("log: %v", logs.logs())
	}
}

// TestAcceptBacklogGrowsWithUse: an idle session holds no backlog; streams
// queue up to AcceptBacklog, and the one past it is refused (RST).
func TestAcceptBacklogGrowsWithUse(t *testing.T) {
	conf := testConfNoKeepAlive()
	serverConf := conf.Clone()
	serverConf.AcceptBacklog = 4
	c, sc := testConnTCP(t)
	client, server := testClientServerConfig(t, c, sc, conf, serverConf)
	if server.accepts.q != nil {
		t.Fatal("a new session holds an accept backlog")
	}
	for i := 0; i < 4; i++ {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	waitUntil(t, 5*time.Second, "four streams waiting for Accept", func() bool {
		server.accepts.mu.Lock()
		defer server.accepts.mu.Unlock()
		return len(server.accepts.q) == 4
	})
	// The fifth is past the backlog: its opener reads the reset.
	fifth, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer fifth.Close()
	fifth.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := fifth.Read(make([]byte, 1)); err != ErrConnectionReset {
		t.Fatalf("the stream past the backlog: read %v, want %v", err, ErrConnectionReset)
	}
	for i := 0; i < 4; i++ {
		st, err := server.AcceptStream()
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		defer st.Close()
	}
	server.accepts.mu.Lock()
	held := server.accepts.q
	server.accepts.mu.Unlock()
	if held != nil {
		t.Fatalf("an emptied backlog is still held (%d slots)", cap(held))
	}
}

// TestServeAndOnClose: with Serve, streams the peer opens (those waiting
// already, and new ones) reach the handler with no Accept, each started
// through Config.Go; OnClose functions run once the session has closed,
// and at once when registered after that.
func TestServeAndOnClose(t *testing.T) {
	conf := testConfNoKeepAlive()
	sconf := conf.Clone()
	var started atomic.Int32
	sconf.Go = func(f func()) {
		started.Add(1)
		go f()
	}
	c, sc := testConnTCP(t)
	client, server := testClientServerConfig(t, c, sc, conf, sconf)
	early, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	early.Write([]byte("a"))
	waitUntil(t, 5*time.Second, "the first stream queued", func() bool {
		server.accepts.mu.Lock()
		defer server.accepts.mu.Unlock()
		return len(server.accepts.q) == 1
	})
	got := make(chan string, 2)
	server.Serve(func(st *Stream, err error) {
		if err != nil {
			got <- err.Error()
			return
		}
		b := make([]byte, 1)
		io.ReadFull(st, b)
		got <- string(b)
		st.Close()
	})
	late, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	late.Write([]byte("b"))
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("streams handed to Serve's handler: %v, want a and b", seen)
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("streams handed to Serve's handler: %v, want a and b", seen)
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("Config.Go started %d handlers, want 2", n)
	}

	closed := make(chan struct{})
	server.OnClose(func() { close(closed) })
	select {
	case <-closed:
		t.Fatal("OnClose ran before the session closed")
	default:
	}
	server.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose did not run after Close")
	}
	after := make(chan struct{})
	server.OnClose(func() { close(after) })
	select {
	case <-after:
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose registered after Close did not run")
	}
}

// TestKeepAliveTakesTurns: two idle sessions that both ping only a silent
// peer do not both ping: the client pings, the server only answers, so
// the link carries one ping per interval, not one from each side.
func TestKeepAliveTakesTurns(t *testing.T) {
	conf := testConf()
	conf.KeepAliveInterval = 100 * time.Millisecond
	conf.KeepAliveOnlyWhenSilent = true
	c, sc := testConnTCP(t)
	client, server := testClientServerConfig(t, c, sc, conf, conf.Clone())
	began := time.Now()
	waitUntil(t, 10*time.Second, "the client pinged for two seconds", func() bool {
		return pingsSent(client) > 0 && time.Since(began) > 2*time.Second
	})
	elapsed := time.Since(began)
	fromClient, fromServer := pingsSent(client), pingsSent(server)
	// Each side pinging every interval would be two per interval; a
	// loaded machine only delays timers, so it makes fewer, not more.
	if most := uint32(1.5 * float64(elapsed) / float64(conf.KeepAliveInterval)); fromClient+fromServer > most {
		t.Fatalf("%d+%d pings in %s at an interval of %s: both sides ping (at most %d)",
			fromClient, fromServer, elapsed.Round(time.Millisecond), conf.KeepAliveInterval, most)
	}
	if fromServer >= fromClient {
		t.Fatalf("the server pinged %d times, the client %d: the server should leave the pinging to the client", fromServer, fromClient)
	}
}
