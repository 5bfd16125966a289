package yamux

// Postern: tests of direct writes (direct.go) and direct delivery
// (deliver.go).

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallConn passes writes through until stall is called; then writes
// block until the connection is closed, as a TCP write to a peer that
// stopped reading does.
type stallConn struct {
	io.ReadWriteCloser
	mu      sync.Mutex
	stalled bool
	closed  chan struct{}
	once    sync.Once
}

func newStallConn(c io.ReadWriteCloser) *stallConn {
	return &stallConn{ReadWriteCloser: c, closed: make(chan struct{})}
}

func (c *stallConn) stall() { c.mu.Lock(); c.stalled = true; c.mu.Unlock() }

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	stalled := c.stalled
	c.mu.Unlock()
	if stalled {
		<-c.closed
		return 0, net.ErrClosed
	}
	return c.ReadWriteCloser.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.ReadWriteCloser.Close()
}

func directConf() *Config {
	conf := testConfNoKeepAlive()
	conf.DirectWrite = true
	conf.ConnectionWriteTimeout = 5 * time.Second
	return conf
}

// A direct write stuck on a full link ends the session after
// ConnectionWriteTimeout, and the writer gets ErrConnectionWriteTimeout.
func TestDirectWriteStuckEndsSession(t *testing.T) {
	c, s := testConnTCP(t)
	sc := newStallConn(c)
	conf := directConf()
	conf.ConnectionWriteTimeout = 200 * time.Millisecond
	client, server := testClientServerConfig(t, sc, s, conf, directConf())
	st, _ := openAccept(t, client, server)
	sc.stall()
	done := make(chan error, 1)
	go func() {
		_, err := st.Write([]byte("stuck"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnectionWriteTimeout) {
			t.Errorf("write: %v, want ErrConnectionWriteTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck direct write did not return")
	}
	select {
	case <-client.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("session still open after a write timed out")
	}
}

// Many streams writing at once, some directly and some through the send
// loop, each deliver their bytes intact and in order.
func TestDirectWriteManyStreamsIntact(t *testing.T) {
	c, s := testConnTLS(t)
	client, server := testClientServerConfig(t, c, s, directConf(), directConf())
	const streams, size = 16, 1 << 20
	sums := make(chan string, streams)
	go func() {
		for i := 0; i < streams; i++ {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				h := sha256.New()
				n, err := io.Copy(h, st)
				sums <- fmt.Sprintf("%d %x %v", n, h.Sum(nil), err)
			}()
		}
	}()
	var want []string
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		data := bytes.Repeat([]byte{byte(i)}, size)
		for j := range data {
			data[j] ^= byte(j * 7)
		}
		want = append(want, fmt.Sprintf("%d %x %v", size, sha256.Sum256(data), nil))
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off, k := 0, 1; off < len(data); k = k*3%65521 + 1 {
				end := minInt(off+k, len(data))
				if _, err := st.Write(data[off:end]); err != nil {
					t.Error(err)
					return
				}
				off = end
			}
			st.Close()
		}()
	}
	wg.Wait()
	got := map[string]int{}
	for i := 0; i < streams; i++ {
		select {
		case s := <-sums:
			got[s]++
		case <-time.After(20 * time.Second):
			t.Fatal("streams did not finish")
		}
	}
	for _, w := range want {
		if got[w] == 0 {
			t.Errorf("no stream received %s; got %v", w, got)
		}
		got[w]--
	}
}

// A reader waiting in WaitDeliver gets data through its deliver function;
// what the function does not take is buffered and read as usual, in
// order; delivered bytes free window, so more than the initial window
// goes through with frames taken whole.
func TestDeliverTakesFramesAndBuffersTheRest(t *testing.T) {
	conf := directConf()
	conf.Buffer = NewBudget(8<<20, nil)
	client, server := posternPair(t, conf)
	c, s := openAccept(t, client, server)
	var got bytes.Buffer // written by deliver while the reader waits, else by the reader
	calls, whole := 0, 0
	s.SetDeliver(func(p []byte) int {
		calls++
		k := len(p) // take all, ten bytes, or nothing, in turn
		switch calls % 3 {
		case 1:
			k = minInt(k, 10)
		case 2:
			k = 0
		default:
			whole++
		}
		got.Write(p[:k])
		return k
	})
	data := make([]byte, 2<<20) // 8 times the initial window
	for i := range data {
		data[i] = byte(i * 13 / 7)
	}
	go func() {
		for off := 0; off < len(data); off += 1000 {
			if _, err := c.Write(data[off:minInt(off+1000, len(data))]); err != nil {
				return
			}
		}
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	s.SetReadDeadline(deadline)
	for {
		if err := s.WaitDeliver(); err != nil && err != io.EOF {
			t.Fatalf("wait: %v (got %d of %d bytes)", err, got.Len(), len(data))
		}
		n, err := s.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v (got %d of %d bytes)", err, got.Len(), len(data))
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("received %d bytes, differing from the %d sent", got.Len(), len(data))
	}
	if whole == 0 {
		t.Error("no frame was delivered whole")
	}
	if u := conf.Buffer.Used(); u > 256<<10 {
		t.Errorf("budget holds %d bytes at the end", u)
	}
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// gateConn blocks the first write made after arm until open is called,
// and says on entered when that write has begun.
type gateConn struct {
	io.ReadWriteCloser
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	gate    chan struct{}
	opened  sync.Once
}

func newGateConn(c io.ReadWriteCloser) *gateConn {
	return &gateConn{ReadWriteCloser: c, entered: make(chan struct{}), gate: make(chan struct{})}
}

func (c *gateConn) arm()  { c.mu.Lock(); c.armed = true; c.mu.Unlock() }
func (c *gateConn) open() { c.opened.Do(func() { close(c.gate) }) }

func (c *gateConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	armed := c.armed
	c.armed = false
	c.mu.Unlock()
	if armed {
		close(c.entered)
		<-c.gate
	}
	return c.ReadWriteCloser.Write(p)
}

// expectRead reads len(want) bytes from st and compares them, failing the
// test after 10 s.
func expectRead(t *testing.T, st *Stream, want string) {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(st, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// A small frame whose writer finds the write lock taken is left for the
// holder: the writer returns while the holder's write is still blocked,
// the holder writes the frame before it lets go, and an idle session then
// holds no buffer for left frames.
func TestDirectWriteLeavesFrameForHolder(t *testing.T) {
	c, s := testConnTCP(t)
	gc := newGateConn(c)
	client, server := testClientServerConfig(t, gc, s, directConf(), directConf())
	a, aPeer := openAccept(t, client, server)
	b, bPeer := openAccept(t, client, server)

	gc.arm()
	defer gc.open() // a failing test must not leave the holder blocked
	holder := make(chan error, 1)
	go func() {
		_, err := a.Write([]byte("held"))
		holder <- err
	}()
	<-gc.entered // a holds the write lock, its write blocked
	left := make(chan error, 1)
	go func() {
		_, err := b.Write([]byte("left"))
		left <- err
	}()
	select {
	case err := <-left:
		if err != nil {
			t.Fatalf("left write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a small write waited for the write lock's holder instead of leaving its frame")
	}
	gc.open()
	if err := <-holder; err != nil {
		t.Fatalf("holder's write: %v", err)
	}
	expectRead(t, aPeer, "held")
	expectRead(t, bPeer, "left")

	d := &client.direct
	d.leftMu.Lock()
	defer d.leftMu.Unlock()
	if d.left != nil || d.hasLeft.Load() {
		t.Errorf("an idle session holds left frames: %v, %v", d.left, d.hasLeft.Load())
	}
}

// A frame left after the holder's last look and before it lets go is not
// stranded: the holder looks again after letting go and writes it.
func TestDirectWriteLeftLateIsWritten(t *testing.T) {
	c, s := testConnTCP(t)
	client, server := testClientServerConfig(t, c, s, directConf(), directConf())
	a, aPeer := openAccept(t, client, server)
	b, bPeer := openAccept(t, client, server)

	var once sync.Once
	hook := func(s *Session) {
		if s != client {
			return
		}
		once.Do(func() {
			// Still under the lock: b's frame can only be left.
			if ok := client.direct.leave(header(mustHeader(b.id, 4)), []byte("late")); !ok {
				t.Error("frame not left")
			}
		})
	}
	testHookBeforeUnlock.Store(&hook)
	defer testHookBeforeUnlock.Store(nil)
	if _, err := a.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	expectRead(t, aPeer, "first")
	expectRead(t, bPeer, "late") // no later write carries it
}

func mustHeader(id uint32, n int) []byte {
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeData, 0, id, uint32(n))
	return hdr
}

// countConn counts the writes made to the connection.
type countConn struct {
	io.ReadWriteCloser
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.ReadWriteCloser.Write(p)
}

// Streams whose writers are ready to run at the same moment (a poller
// that woke several relays together) go out in one write: the first to
// take the write lock lets the others run, they leave their frames, and
// it writes them all with its own. One thread runs Go code, as an agent's
// default on 2 cores, so the writers run one after the other.
func TestDirectWriteGathersReadyWriters(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c, s := testConnTCP(t)
	cc := &countConn{ReadWriteCloser: c}
	client, server := testClientServerConfig(t, cc, s, directConf(), directConf())
	const n = 8
	var streams, peers []*Stream
	for i := 0; i < n; i++ {
		st, peer := openAccept(t, client, server)
		streams, peers = append(streams, st), append(peers, peer)
	}
	d := &client.direct
	d.mu.Lock()
	d.gatherRest, d.gatherMisses = 0, 0 // opening the streams yielded for nothing
	d.mu.Unlock()

	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, st := range streams {
		i, st := i, st // this module's go.mod predates per-iteration loop variables
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := st.Write([]byte(fmt.Sprintf("frame %d", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	before := cc.writes.Load()
	close(start)
	wg.Wait()
	writes := cc.writes.Load() - before
	for i, peer := range peers {
		expectRead(t, peer, fmt.Sprintf("frame %d", i))
	}
	// One write when the scheduler runs them in order; the race
	// detector's shuffling can split them. Apart, they take 2n.
	if writes >= n/2 {
		t.Errorf("%d small frames ready at once took %d writes, want them gathered into fewer than %d", n, writes, n/2)
	}
}

// A holder that finds nobody to gather stops yielding for a while, so one
// request at a time pays for a yield only now and then; a yield that
// gathers a frame keeps it yielding.
func TestGatherPausesWhenNothingGathers(t *testing.T) {
	var d directWriter
	yields, gathering := 0, false
	defer func(y func()) { yield = y }(yield)
	yield = func() {
		yields++
		if gathering {
			d.hasLeft.Store(true)
		}
	}
	run := func(writes int) int {
		yields = 0
		for i := 0; i < writes; i++ {
			d.gather()
			d.hasLeft.Store(false)
		}
		return yields
	}
	if got := run(gatherMissLimit); got != gatherMissLimit {
		t.Errorf("first %d writes yielded %d times, want every time", gatherMissLimit, got)
	}
	if got := run(gatherPause); got != 0 {
		t.Errorf("after %d yields that gathered nothing, %d of the next %d writes yielded, want none", gatherMissLimit, got, gatherPause)
	}
	gathering = true
	if got := run(10 * gatherPause); got != 10*gatherPause {
		t.Errorf("yields that gather: %d of %d writes yielded, want all", got, 10*gatherPause)
	}
	gathering = false
	if got := run(gatherMissLimit + gatherPause); got != gatherMissLimit {
		t.Errorf("once nothing is gathered again: %d yields in %d writes, want %d", got, gatherMissLimit+gatherPause, gatherMissLimit)
	}
}
