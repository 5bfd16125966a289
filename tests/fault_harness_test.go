//go:build unix

package tests

// The fault suite's harness (TestFault... and TestSoak): a transfer runner
// that moves N bytes each way through a forward with SHA-256 on both ends
// and classifies how each transfer ended, a target that serves it, a TCP
// relay that makes a slow, lossy link (this kernel has no netem), agent
// configs, and RSS sampling of an agent process.
//
// The promise the suite holds Postern to: a transfer either arrives whole
// (hash equal, clean end) or is cut and the application sees a reset
// (ECONNRESET). A clean EOF on a short transfer (cut-but-clean) or a clean
// end with the wrong bytes (corrupted) is always a failure.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// faultClass is how one end saw a transfer end.
type faultClass int

const (
	faultComplete  faultClass = iota // every byte, hash equal, clean end
	faultReset                       // cut, and this end saw ECONNRESET: the promise
	faultCutClean                    // BAD: a clean EOF before the transfer was whole
	faultCorrupted                   // BAD: a clean end with the wrong bytes
	faultFailed                      // neither: refused, timed out, other error
)

func (c faultClass) String() string {
	return [...]string{"complete", "cut-and-reset", "cut-but-clean", "corrupted", "failed"}[c]
}

// bad reports whether c breaks the promise.
func (c faultClass) bad() bool { return c == faultCutClean || c == faultCorrupted }

// faultAction is what the target does part way through a transfer.
type faultAction byte

const (
	faultActNone  faultAction = iota
	faultActHold              // stop at At bytes until released (or the connection fails)
	faultActReset             // reset the connection (RST) at At bytes
)

// faultSpec describes one transfer: Up bytes from the application to the
// target, Down bytes back. The action applies to the down direction when
// Down > 0, else to the up direction.
type faultSpec struct {
	ID       uint64 // 0: the next free id
	Up, Down int64
	Action   faultAction
	At       int64
	// ReadRate throttles the application's reads (bytes/s; 0: as fast as
	// it can).
	ReadRate int
	// ReadPause: after its first read the application stops reading for
	// this long (an injected stall), then goes on.
	ReadPause time.Duration
	// Timeout bounds the whole transfer (default 60s).
	Timeout time.Duration
	// EarlyClose: the application half-closes as soon as its upload is
	// sent, before it reads the answer (as a request/response client
	// does), so the target's side finishes first. Otherwise it half-closes
	// only after reading everything, which tells the target the transfer
	// arrived whole.
	EarlyClose bool
}

// faultResult is how the application saw a transfer end.
type faultResult struct {
	ID        uint64
	Class     faultClass
	Err       error // the first error, if any
	Down, Up  int64 // bytes read and written by the application
	Elapsed   time.Duration
	Connected bool // the forward accepted the connection
}

func (r faultResult) String() string {
	return fmt.Sprintf("transfer %d: %s (down %d, up %d, %s, err %v)", r.ID, r.Class, r.Down, r.Up, r.Elapsed.Round(time.Millisecond), r.Err)
}

// The header the application sends first: id, up, down, seed, action, at.
const faultHeaderSize = 8 * 6

var faultNextID atomic.Uint64

// faultData is the deterministic stream of bytes for (seed, direction).
func faultData(seed uint64, dir byte) *rand.ChaCha8 {
	var key [32]byte
	binary.BigEndian.PutUint64(key[:], seed)
	key[8] = dir
	return rand.NewChaCha8(key)
}

// faultIsReset reports whether err is a reset as the application sees it.
func faultIsReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// faultTransfer runs spec through the forward at addr and classifies what
// the application saw. It never fails the test itself.
func faultTransfer(addr string, spec faultSpec) (r faultResult) {
	start := time.Now()
	r = faultResult{ID: spec.ID}
	if r.ID == 0 {
		r.ID = faultNextID.Add(1)
	}
	defer func() { r.Elapsed = time.Since(start) }()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		r.Class, r.Err = faultFailed, err
		if faultIsReset(err) { // accepted, then reset before connect returned
			r.Class = faultReset
		}
		return r
	}
	return faultTransferConn(c, spec, r, start)
}

// faultTransferConn runs spec over an established connection (TCP, or
// TLS to a mux = false server) and closes it.
func faultTransferConn(conn net.Conn, spec faultSpec, r faultResult, start time.Time) (out faultResult) {
	defer func() { out.Elapsed = time.Since(start) }()
	if r.ID == 0 {
		r.ID = faultNextID.Add(1)
	}
	r.Connected = true
	defer conn.Close()
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	conn.SetDeadline(start.Add(timeout))
	seed := rand.Uint64()

	var hdr [faultHeaderSize]byte
	for i, v := range []uint64{r.ID, uint64(spec.Up), uint64(spec.Down), seed, uint64(spec.Action), uint64(spec.At)} {
		binary.BigEndian.PutUint64(hdr[8*i:], v)
	}

	// Up: header, then spec.Up bytes. The application half-closes only
	// after it has read everything (see below), so the target can tell
	// the application's acknowledgement from a cut.
	upHash := sha256.New()
	upErr := make(chan error, 1)
	go func() {
		if _, err := conn.Write(hdr[:]); err != nil {
			upErr <- err
			return
		}
		src := faultData(seed, 'u')
		buf := make([]byte, 32<<10)
		for left := spec.Up; left > 0; {
			n := int(min(left, int64(len(buf))))
			src.Read(buf[:n])
			upHash.Write(buf[:n])
			m, err := conn.Write(buf[:n])
			r.Up += int64(m)
			if err != nil {
				upErr <- err
				return
			}
			left -= int64(n)
		}
		if spec.EarlyClose {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					upErr <- err
					return
				}
			}
		}
		upErr <- nil
	}()

	// Down: spec.Down bytes, then the SHA-256 of what the target read,
	// then a clean end.
	want := faultData(seed, 'd')
	buf := make([]byte, 32<<10)
	wbuf := make([]byte, 32<<10)
	var readErr error
	mismatch := false
	var tail []byte
	paceStart := time.Now()
	paused := false
	for {
		chunk := buf
		if spec.ReadRate > 0 {
			chunk = buf[:min(len(buf), max(spec.ReadRate/20, 1024))]
		}
		n, err := conn.Read(chunk)
		if n > 0 {
			got := chunk[:n]
			if inData := spec.Down - r.Down; inData > 0 {
				k := int(min(inData, int64(n)))
				want.Read(wbuf[:k])
				if !bytes.Equal(got[:k], wbuf[:k]) {
					mismatch = true
				}
				r.Down += int64(k)
				got = got[k:]
			}
			tail = append(tail, got...)
			if len(tail) > sha256.Size {
				mismatch = true
				tail = tail[:sha256.Size]
			}
			if spec.ReadPause > 0 && !paused { // the application stalls: an injected delay
				paused = true
				time.Sleep(spec.ReadPause)
				paceStart = paceStart.Add(spec.ReadPause)
			}
			if spec.ReadRate > 0 { // the application is slow: an injected delay
				due := paceStart.Add(time.Duration(float64(r.Down+int64(len(tail))) / float64(spec.ReadRate) * float64(time.Second)))
				time.Sleep(time.Until(due))
			}
		}
		if err != nil {
			readErr = err
			break
		}
	}
	// The connection's deadline bounds the writer too.
	wErr := <-upErr
	switch {
	case faultIsReset(readErr) || faultIsReset(wErr):
		r.Class, r.Err = faultReset, readErr
		if !faultIsReset(readErr) {
			r.Err = wErr
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		return r
	case readErr != io.EOF:
		r.Class, r.Err = faultFailed, readErr
		return r
	case wErr != nil:
		// The down direction ended cleanly but the application could not
		// write everything (EPIPE after the peer shut down, say): clean
		// end, incomplete transfer.
		r.Class, r.Err = faultCutClean, fmt.Errorf("clean EOF, but writing failed: %w", wErr)
		return r
	case r.Down < spec.Down || len(tail) < sha256.Size:
		r.Class, r.Err = faultCutClean, fmt.Errorf("clean EOF after %d of %d bytes (+%d of the %d-byte digest)", r.Down, spec.Down, len(tail), sha256.Size)
		return r
	case mismatch:
		r.Class, r.Err = faultCorrupted, errors.New("the bytes read differ from the bytes the target sent")
		return r
	case !bytes.Equal(tail, upHash.Sum(nil)):
		r.Class, r.Err = faultCorrupted, errors.New("the target's SHA-256 of the upload differs from the application's")
		return r
	}
	// Acknowledge: the target sees this clean end as the transfer's end.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && !spec.EarlyClose {
		cw.CloseWrite()
	}
	r.Class = faultComplete
	return r
}

// faultTargetResult is how the target saw a transfer end.
type faultTargetResult struct {
	ID    uint64
	Class faultClass
	Err   error
	At    time.Time // when the target saw the end
}

// faultTarget serves transfers: it reads the header, reads the upload and
// sends the download at the same time, then the SHA-256 of the upload,
// half-closes, and waits for the application's clean end.
type faultTarget struct {
	Addr string

	mu      sync.Mutex
	results map[uint64]chan faultTargetResult
	holds   map[uint64]chan struct{}
	reached map[uint64]chan struct{} // closed when a held transfer reached its hold
	counts  [5]atomic.Int64
	conns   atomic.Int64
}

func faultNewTarget(t testing.TB) *faultTarget {
	ft := &faultTarget{
		results: map[uint64]chan faultTargetResult{},
		holds:   map[uint64]chan struct{}{},
		reached: map[uint64]chan struct{}{},
	}
	ft.Addr = e2eServe(t, ft.serve)
	t.Cleanup(ft.releaseAll) // before e2eServe's cleanup waits for the handlers
	return ft
}

func (ft *faultTarget) chans(id uint64) (chan faultTargetResult, chan struct{}, chan struct{}) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.results[id] == nil {
		ft.results[id] = make(chan faultTargetResult, 1)
		ft.holds[id] = make(chan struct{})
		ft.reached[id] = make(chan struct{})
	}
	return ft.results[id], ft.holds[id], ft.reached[id]
}

// release lets a held transfer go on.
func (ft *faultTarget) release(id uint64) {
	_, hold, _ := ft.chans(id)
	ft.mu.Lock()
	defer ft.mu.Unlock()
	select {
	case <-hold:
	default:
		close(hold)
	}
}

func (ft *faultTarget) releaseAll() {
	ft.mu.Lock()
	ids := make([]uint64, 0, len(ft.holds))
	for id := range ft.holds {
		ids = append(ids, id)
	}
	ft.mu.Unlock()
	for _, id := range ids {
		ft.release(id)
	}
}

// waitHeld waits until transfer id reached its hold.
func (ft *faultTarget) waitHeld(t testing.TB, id uint64, timeout time.Duration) {
	t.Helper()
	_, _, reached := ft.chans(id)
	select {
	case <-reached:
	case <-time.After(timeout):
		t.Fatalf("transfer %d did not reach its hold at the target within %s", id, timeout)
	}
}

// result waits for the target's view of transfer id.
func (ft *faultTarget) result(t testing.TB, id uint64, timeout time.Duration) faultTargetResult {
	t.Helper()
	res, _, _ := ft.chans(id)
	select {
	case r := <-res:
		res <- r
		return r
	case <-time.After(timeout):
		t.Fatalf("the target saw no end of transfer %d within %s", id, timeout)
		return faultTargetResult{}
	}
}

func (ft *faultTarget) serve(c *net.TCPConn) {
	ft.conns.Add(1)
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	var hdr [faultHeaderSize]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return // a connection that never was a transfer (a probe, a cut before the header)
	}
	v := func(i int) uint64 { return binary.BigEndian.Uint64(hdr[8*i:]) }
	id, up, down, seed, action, at := v(0), int64(v(1)), int64(v(2)), v(3), faultAction(v(4)), int64(v(5))
	res, hold, reached := ft.chans(id)
	report := func(class faultClass, err error) {
		ft.counts[class].Add(1)
		select {
		case res <- faultTargetResult{ID: id, Class: class, Err: err, At: time.Now()}:
		default:
		}
	}
	// act runs the action when a direction reaches at bytes; it reports
	// false when the connection was reset on purpose.
	var acted atomic.Bool
	deadline := time.Now().Add(10 * time.Minute)
	c.SetDeadline(deadline)
	var holdErr error
	act := func() bool {
		if acted.Swap(true) {
			return true
		}
		switch action {
		case faultActHold:
			close(reached)
			if up > 0 {
				<-hold
				return true
			}
			// Nothing more comes from the application until its final
			// half-close, so a read that ends during the hold is the
			// connection failing: watch for it while waiting.
			var one [1]byte
			for {
				select {
				case <-hold:
					c.SetReadDeadline(deadline)
					return true
				default:
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(one[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					holdErr = err
					return false
				} else if err == nil {
					holdErr = errors.New("the application sent data during the hold")
					return false
				}
			}
		case faultActReset:
			c.SetLinger(0)
			c.Close()
			return false
		}
		return true
	}
	downHasAction := down > 0 && action != faultActNone
	upHasAction := down == 0 && action != faultActNone

	downErr := make(chan error, 1)
	go func() {
		src := faultData(seed, 'd')
		buf := make([]byte, 32<<10)
		for sent := int64(0); sent < down; {
			n := int(min(down-sent, int64(len(buf))))
			if downHasAction && sent < at && sent+int64(n) > at {
				n = int(at - sent)
			}
			if downHasAction && sent == at && !act() {
				if holdErr != nil {
					downErr <- holdErr
				} else {
					downErr <- errors.New("reset by the target on purpose")
				}
				return
			}
			src.Read(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				downErr <- err
				return
			}
			sent += int64(n)
		}
		downErr <- nil
	}()

	h := sha256.New()
	want := faultData(seed, 'u')
	buf := make([]byte, 32<<10)
	wbuf := make([]byte, 32<<10)
	var got int64
	var upErr error
	mismatch := false
	for got < up {
		if upHasAction && got >= at && !act() {
			upErr = errors.New("reset by the target on purpose")
			break
		}
		limit := int64(len(buf))
		if upHasAction && got < at {
			limit = min(limit, at-got)
		}
		n, err := c.Read(buf[:min(limit, up-got)])
		if n > 0 {
			h.Write(buf[:n])
			want.Read(wbuf[:n])
			if !bytes.Equal(buf[:n], wbuf[:n]) {
				mismatch = true
			}
			got += int64(n)
		}
		if err != nil {
			upErr = err
			break
		}
	}
	dErr := <-downErr
	if acted.Load() && action == faultActReset {
		report(faultReset, errors.New("reset by the target on purpose"))
		return
	}
	switch {
	case faultIsReset(upErr) || faultIsReset(dErr):
		c.SetLinger(0)
		report(faultReset, errors.Join(upErr, dErr))
		return
	case upErr == io.EOF || dErr == io.EOF:
		report(faultCutClean, fmt.Errorf("clean EOF after %d of %d uploaded bytes (download: %v)", got, up, dErr))
		return
	case upErr != nil || dErr != nil:
		report(faultFailed, errors.Join(upErr, dErr))
		return
	}
	if _, err := c.Write(h.Sum(nil)); err != nil {
		if faultIsReset(err) {
			report(faultReset, err)
		} else {
			report(faultFailed, err)
		}
		return
	}
	c.CloseWrite()
	// The application's clean end acknowledges the whole transfer.
	n, err := io.Copy(io.Discard, c)
	switch {
	case faultIsReset(err):
		report(faultReset, err)
	case err != nil:
		report(faultFailed, err)
	case n != 0 || mismatch:
		report(faultCorrupted, fmt.Errorf("upload differs from what the application sent (%d extra bytes, mismatch %v)", n, mismatch))
	default:
		report(faultComplete, nil)
	}
}

// faultLink is a TCP relay that makes a slow, lossy link between two
// agents: each direction is limited to Rate bytes/s, each chunk is
// delayed by Delay, and with probability StallP per chunk the direction
// stalls for StallFor. Stall and Cut act on every connection at once.
type faultLink struct {
	Addr     string
	upstream atomic.Pointer[string]

	Rate     int // bytes/s per direction; 0: unlimited
	Delay    time.Duration
	StallP   float64
	StallFor time.Duration
	cutP     atomic.Uint64 // math.Float64bits of the probability per chunk of a cut; see SetCutP

	mu         sync.Mutex
	conns      map[*net.TCPConn]struct{}
	stallUntil time.Time
	cuts       atomic.Int64
	stalls     atomic.Int64
}

// faultNewLink relays connections to upstream (changed later with
// setUpstream).
func faultNewLink(t testing.TB, upstream string) *faultLink {
	l := &faultLink{conns: map[*net.TCPConn]struct{}{}}
	l.upstream.Store(&upstream)
	ln := testnet.Listen(t)
	l.Addr = ln.Addr().String()
	testnet.Serve(t, ln, l.relay)
	t.Cleanup(l.Cut) // so Serve's cleanup does not wait for long-lived tunnels
	return l
}

func (l *faultLink) setUpstream(addr string) { l.upstream.Store(&addr) }

// SetCutP sets the probability per chunk that the link cuts the connection
// carrying it (RST both ways); it may change while the link runs.
func (l *faultLink) SetCutP(p float64) { l.cutP.Store(math.Float64bits(p)) }

func (l *faultLink) track(c *net.TCPConn, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

// Stall holds every direction of every connection for d.
func (l *faultLink) Stall(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stallUntil = time.Now().Add(d)
	l.stalls.Add(1)
}

// Cut resets every connection the link carries.
func (l *faultLink) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) > 0 {
		l.cuts.Add(1)
	}
	for c := range l.conns {
		c.SetLinger(0)
		c.Close()
	}
}

func (l *faultLink) relay(a *net.TCPConn) {
	up, err := net.DialTimeout("tcp", *l.upstream.Load(), 5*time.Second)
	if err != nil {
		a.SetLinger(0)
		return
	}
	b := up.(*net.TCPConn)
	defer b.Close()
	l.track(a, true)
	l.track(b, true)
	defer l.track(a, false)
	defer l.track(b, false)
	done := make(chan struct{}, 2)
	cut := func() {
		l.cuts.Add(1)
		a.SetLinger(0)
		b.SetLinger(0)
		a.Close()
		b.Close()
	}
	go func() { l.pump(b, a, cut); done <- struct{}{} }()
	go func() { l.pump(a, b, cut); done <- struct{}{} }()
	<-done
	<-done
}

// pump copies src to dst through the link's shaping. A read error other
// than EOF (a reset) resets dst too; EOF half-closes dst.
func (l *faultLink) pump(dst, src *net.TCPConn, cut func()) {
	buf := make([]byte, 16<<10)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.shape(n, rng)
			if p := math.Float64frombits(l.cutP.Load()); p > 0 && rng.Float64() < p {
				cut()
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.SetLinger(0)
				src.Close()
				return
			}
		}
		if err == io.EOF {
			dst.CloseWrite()
			return
		}
		if err != nil {
			dst.SetLinger(0)
			dst.Close()
			return
		}
	}
}

// shape delays a chunk of n bytes: the injected latency, rate limit and
// stalls of the slow link.
func (l *faultLink) shape(n int, rng *rand.Rand) {
	d := l.Delay
	if l.Rate > 0 {
		d += time.Duration(float64(n) / float64(l.Rate) * float64(time.Second))
	}
	if l.StallP > 0 && rng.Float64() < l.StallP {
		d += l.StallFor
		l.stalls.Add(1)
	}
	l.mu.Lock()
	until := l.stallUntil
	l.mu.Unlock()
	if w := time.Until(until); w > 0 {
		d += w
	}
	if d > 0 {
		time.Sleep(d) // the link's injected delay, not a synchronisation
	}
}

// faultRSS is the resident set size of process pid, from /proc.
func faultRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) != 2 || fields[1] != "kB" {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, rest)
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS line", pid)
}

// faultSampleRSS samples pid's RSS every interval until ctx ends, calling
// each with every sample; it returns the largest seen.
func faultSampleRSS(ctx context.Context, pid int, interval time.Duration, each func(int64)) int64 {
	var peak int64
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if rss, err := faultRSS(pid); err == nil {
			peak = max(peak, rss)
			if each != nil {
				each(rss)
			}
		}
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
	}
}

// faultConf is an agent's config: name, shutdown_timeout and [tls] from
// files, then the given tables as TOML text.
func faultConf(name string, f testca.Files, shutdownTimeout string, tables ...string) string {
	return fmt.Sprintf("name = %q\nshutdown_timeout = %q\n\n[tls]\ncert = %q\nkey = %q\nca = %q\n\n%s",
		name, shutdownTimeout, f.Cert, f.Key, f.CA, strings.Join(tables, "\n"))
}

// faultClient is a [[client]] table named "hub" dialing addr, reconnecting
// quickly, with extra lines.
func faultClient(addr string, extra ...string) string {
	return fmt.Sprintf("[[client]]\nname = \"hub\"\nservers = [%q]\nserver_name = \"hub.test\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n%s\n",
		addr, strings.Join(extra, "\n"))
}

// faultForward is a [[forward]] on an ephemeral loopback port.
func faultForward(service, via string) string {
	return fmt.Sprintf("[[forward]]\nlisten = \"127.0.0.1:0\"\nservice = %q\nvia = %q\ntunnel_wait = \"3s\"\n", service, via)
}

// faultPair is a hub and a site with a forward "data" on the site to the
// hub's service "data" (a faultTarget), the site dialing the hub
// (directly, or through link when the test makes one).
type faultPair struct {
	dir       string
	certs     *e2eCerts
	target    *faultTarget
	hub, site *e2eAgent
	hubAddr   string
	forward   string
}

type faultPairOptions struct {
	hubShutdown, siteShutdown string
	tunnel                    string // lines of a [tunnel] table for both agents
	siteClient                []string
	link                      func(hubAddr string) string // returns the address the site dials
	hubExtra, siteExtra       []string
	// siteOffers: the site offers the service "rdata" (the same target) to
	// the hub (allow cn:hub), for reverse forwards.
	siteOffers bool
}

func faultStartPair(t *testing.T, o faultPairOptions) *faultPair {
	t.Helper()
	e2eBinary(t)
	p := &faultPair{dir: t.TempDir()}
	p.certs = e2eNewCerts(t, p.dir)
	p.target = faultNewTarget(t)
	if o.hubShutdown == "" {
		o.hubShutdown = "5s"
	}
	if o.siteShutdown == "" {
		o.siteShutdown = "5s"
	}
	var tun []string
	if o.tunnel != "" {
		tun = []string{"[tunnel]\n" + o.tunnel + "\n"}
	}
	hubTables := append(append([]string{}, tun...), "[[server]]\nlisten = \"127.0.0.1:0\"\n", e2eServiceTOML("data", p.target.Addr, "cn:site-a"))
	hubTables = append(hubTables, o.hubExtra...)
	p.hub = e2eStartAgent(t, "hub", e2eWriteConfig(t, p.dir, "hub", faultConf("hub", p.certs.hub, o.hubShutdown, hubTables...)))
	p.hubAddr = p.hub.serverAddr(t)
	dial := p.hubAddr
	if o.link != nil {
		dial = o.link(p.hubAddr)
	}
	siteTables := append(append([]string{}, tun...), faultClient(dial, o.siteClient...), faultForward("data", "hub"))
	siteTables = append(siteTables, o.siteExtra...)
	if o.siteOffers {
		siteTables = append(siteTables, e2eServiceTOML("rdata", p.target.Addr, "cn:hub"))
	}
	p.site = e2eStartAgent(t, "site", e2eWriteConfig(t, p.dir, "site", faultConf("site-a", p.certs.site, o.siteShutdown, siteTables...)))
	p.forward = p.site.forwardAddr(t, "data")
	p.site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+dial)
	return p
}

// faultStart runs spec through addr in the background; the result arrives
// on the channel.
func faultStart(addr string, spec faultSpec) <-chan faultResult {
	ch := make(chan faultResult, 1)
	go func() { ch <- faultTransfer(addr, spec) }()
	return ch
}

// faultWait waits for a transfer started with faultStart.
func faultWait(t testing.TB, ch <-chan faultResult, timeout time.Duration) faultResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("transfer did not end within %s", timeout)
		return faultResult{}
	}
}

// faultHeldDownload starts a download of size bytes through addr that the
// target holds after at bytes, and waits until it is held there: a
// transfer stuck in flight.
func faultHeldDownload(t *testing.T, ft *faultTarget, addr string, size, at int64) (uint64, <-chan faultResult) {
	t.Helper()
	id := faultNextID.Add(1)
	ch := faultStart(addr, faultSpec{ID: id, Down: size, Action: faultActHold, At: at, Timeout: 60 * time.Second})
	ft.waitHeld(t, id, 10*time.Second)
	return id, ch
}

// faultExpectReset fails the test unless the application and (when
// checkTarget) the target both saw transfer r cut with a reset.
func faultExpectReset(t *testing.T, ft *faultTarget, r faultResult, checkTarget bool) {
	t.Helper()
	if r.Class != faultReset {
		t.Errorf("application: %v; want cut-and-reset (ECONNRESET)", r)
	}
	if checkTarget {
		tr := ft.result(t, r.ID, 15*time.Second)
		if tr.Class != faultReset {
			t.Errorf("target: transfer %d ended %s (%v); want cut-and-reset (ECONNRESET)", r.ID, tr.Class, tr.Err)
		}
	}
}
