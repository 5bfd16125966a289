package yamux

// Postern: answers to the peer's pings (idle.go, answerPing).

import (
	"testing"
	"time"
)

// TestPingAnswerKeepsQueueCount: an answer queued for the send loop (the
// session has a stream, so it is not written on the receive goroutine)
// is counted while queued like any control frame, so once it is written
// the count of queued frames is back at zero and direct writes go on.
func TestPingAnswerKeepsQueueCount(t *testing.T) {
	conf := directConf()
	c, sc := testConnTCP(t)
	client, server := testClientServerConfig(t, c, sc, conf, conf.Clone())
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ss, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	for i := 0; i < 5; i++ {
		if _, err := client.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 2*time.Second, "no frame counted as queued on the answering side", func() bool {
		return server.direct.queued.Load() == 0
	})
}

// TestIdlePingAnsweredDirectly: on a session with no streams the answer
// to a ping is written on the receive goroutine, so pings are answered
// even while the send loop cannot run (its control queue is not used).
func TestIdlePingAnsweredDirectly(t *testing.T) {
	conf := directConf()
	c, sc := testConnTCP(t)
	client, server := testClientServerConfig(t, c, sc, conf, conf.Clone())
	for i := 0; i < 5; i++ {
		if _, err := client.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	if n := server.direct.queued.Load(); n != 0 {
		t.Fatalf("%d frames counted as queued after answering pings", n)
	}
	if n := len(server.controlCh); n != 0 {
		t.Fatalf("%d answers left in the control queue", n)
	}
}
