package tunnel

import (
	"net"
	"sync"
)

// batchConn sits under TLS and gathers the records of one tunnel write into
// a single system call. crypto/tls writes every record (at most 16 KiB) with
// its own Write on the connection; a 64 KiB yamux frame would cost four
// system calls. Batching is off during the handshake and switched on by New;
// tunnelConn flushes after each write it passes to TLS, and Close flushes
// what TLS wrote on its own (the close_notify alert).
//
// Writes come from one goroutine at a time (TLS holds its output lock);
// Flush runs on that same goroutine right after.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	on      bool
	pending *[]byte // the gathered records; nil when there are none
}

// batchPool holds the buffers of batches being gathered: a batch takes one
// for a write and gives it back once sent, so a tunnel that carried a bulk
// transfer keeps no buffer afterwards (a hub keeps thousands of tunnels).
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 64<<10+4*64) // a 64 KiB frame's records
	return &b
}}

// maxBatch bounds the memory a batch may take; past it, records go out as
// they come.
const maxBatch = 256 << 10

// WrapConn prepares a TCP connection to carry a tunnel: give the result to
// tls.Client or tls.Server, and New batches the TLS records of each write.
func WrapConn(c net.Conn) net.Conn { return &batchConn{Conn: c} }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on || b.pending != nil && len(*b.pending)+len(p) > maxBatch {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if !b.on || len(p) > maxBatch {
			return b.Conn.Write(p)
		}
	}
	if b.pending == nil {
		b.pending = batchPool.Get().(*[]byte)
	}
	*b.pending = append(*b.pending, p...)
	return len(p), nil
}

// Flush writes out the gathered records.
func (b *batchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.pending == nil {
		return nil
	}
	buf := b.pending
	b.pending = nil
	_, err := b.Conn.Write(*buf)
	if cap(*buf) <= maxBatch+64<<10 {
		*buf = (*buf)[:0]
		batchPool.Put(buf)
	}
	return err
}

func (b *batchConn) enable() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
}

func (b *batchConn) Close() error {
	b.Flush()
	return b.Conn.Close()
}

// CloseWrite passes a half-close through, after what is pending.
func (b *batchConn) CloseWrite() error {
	b.Flush()
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetLinger passes through, so a tunnel's connection can still be reset.
func (b *batchConn) SetLinger(sec int) error {
	if l, ok := b.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}
