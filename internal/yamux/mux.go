package yamux

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Config is used to tune the Yamux session
type Config struct {
	// AcceptBacklog is used to limit how many streams may be
	// waiting an accept.
	AcceptBacklog int

	// EnableKeepalive is used to do a period keep alive
	// messages using a ping.
	EnableKeepAlive bool

	// KeepAliveInterval is how often to perform the keep alive
	KeepAliveInterval time.Duration

	// ConnectionWriteTimeout is meant to be a "safety valve" timeout after
	// we which will suspect a problem with the underlying connection and
	// close it. This is only applied to writes, where's there's generally
	// an expectation that things will move along quickly.
	ConnectionWriteTimeout time.Duration

	// MaxStreamWindowSize is used to control the maximum
	// window size that we allow for a stream.
	MaxStreamWindowSize uint32

	// StreamOpenTimeout is the maximum amount of time that a stream will
	// be allowed to remain in pending state while waiting for an ack from the peer.
	// Once the timeout is reached the session will be gracefully closed.
	// A zero value disables the StreamOpenTimeout allowing unbounded
	// blocking on OpenStream calls.
	StreamOpenTimeout time.Duration

	// StreamCloseTimeout is the maximum time that a stream will allowed to
	// be in a half-closed state when `Close` is called before forcibly
	// closing the connection. Forcibly closed connections will empty the
	// receive buffer, drop any future packets received for that stream,
	// and send a RST to the remote side.
	StreamCloseTimeout time.Duration

	// Postern: KeepAliveTimeout is how long a keepalive ping waits for its
	// answer once it was sent; 0 means ConnectionWriteTimeout (upstream).
	// Pings and their answers go ahead of queued stream data, so a slow,
	// full link delays them little: dead-peer detection stays separate
	// from the patience ConnectionWriteTimeout gives a saturated link.
	KeepAliveTimeout time.Duration

	// Postern: AdmitStreams keeps each stream's receive window at the
	// initial 256 KiB until Stream.Admit is called; only then may it grow
	// to MaxStreamWindowSize. False: upstream behaviour (full window at
	// once). The wire protocol is unchanged: the peer just receives its
	// window updates later.
	AdmitStreams bool

	// Postern: StartStreamWindowSize, when not 0, is the receive window an
	// admitted stream starts with; it doubles, up to MaxStreamWindowSize,
	// while the stream's reader consumes half of it within two of the
	// session's round trips (see autotune.go). 0: MaxStreamWindowSize at
	// once (upstream).
	StartStreamWindowSize uint32

	// Postern: Go, when not nil, starts the goroutine that takes a stream
	// the peer opened to Serve's handler (a pool of kept goroutines, whose
	// stacks have grown already). Nil: a goroutine of its own.
	Go func(func())

	// Postern: AcceptAfterGoAway keeps accepting the streams the peer opens
	// after this side sent GoAway. Such a stream was opened before the
	// peer saw the GoAway (the two cross on the wire): upstream resets it,
	// which cuts a connection the peer had no way to place elsewhere. With
	// this set, GoAway only asks the peer to open no more; the wire
	// protocol is unchanged.
	AcceptAfterGoAway bool

	// Postern: DirectWrite writes a frame on the caller's goroutine when
	// nothing is queued, instead of handing it to the send loop (see
	// direct.go). A direct write that takes longer than
	// ConnectionWriteTimeout ends the session, which must unblock it by
	// closing the connection (TCP and TLS connections do). False: upstream
	// behaviour, where such a write returns ErrConnectionWriteTimeout and
	// the session carries on. The wire protocol is unchanged.
	DirectWrite bool

	// Postern: Buffer, when not nil, bounds the bytes this session's streams
	// hold received and not yet read (see Budget).
	Buffer *Budget

	// Postern: KeepAliveOnlyWhenSilent sends a keepalive ping only when
	// nothing was received for KeepAliveInterval: any frame, the peer's
	// own pings and their answers included, shows the peer is alive. A
	// silent peer is still found dead KeepAliveInterval +
	// KeepAliveTimeout after its last frame (the server side waits a
	// quarter interval more, so of two sides that both set it the client
	// pings and the server only answers). False: upstream behaviour, a
	// ping every interval.
	KeepAliveOnlyWhenSilent bool

	// Postern: ReadBufferSize is the size of the session's read buffer;
	// 0 means 4096 (upstream). LendReadBuffer lends it from a pool only
	// while it holds bytes: a connection that buffers its own reads (TLS
	// holds a whole decrypted record) needs none while it waits, and every
	// idle session would hold it.
	ReadBufferSize int

	// LogOutput is used to control the log destination. Either Logger or
	// LogOutput can be set, not both.
	LogOutput io.Writer

	// Logger is used to pass in the logger to be used. Either Logger or
	// LogOutput can be set, not both.
	Logger Logger
}

func (c *Config) Clone() *Config {
	c2 := *c
	return &c2
}

// DefaultConfig is used to return a default configuration
func DefaultConfig() *Config {
	return &Config{
		AcceptBacklog:          256,
		EnableKeepAlive:        true,
		KeepAliveInterval:      30 * time.Second,
		ConnectionWriteTimeout: 10 * time.Second,
		MaxStreamWindowSize:    initialStreamWindow,
		StreamCloseTimeout:     5 * time.Minute,
		StreamOpenTimeout:      75 * time.Second,
		LogOutput:              os.Stderr,
	}
}

// VerifyConfig is used to verify the sanity of configuration
func VerifyConfig(config *Config) error {
	if config.AcceptBacklog <= 0 {
		return fmt.Errorf("backlog must be positive")
	}
	if config.KeepAliveInterval == 0 {
		return fmt.Errorf("keep-alive interval must be positive")
	}
	if config.MaxStreamWindowSize < initialStreamWindow {
		return fmt.Errorf("MaxStreamWindowSize must be larger than %d", initialStreamWindow)
	}
	if config.LogOutput != nil && config.Logger != nil {
		return fmt.Errorf("both Logger and LogOutput may not be set, select one")
	} else if config.LogOutput == nil && config.Logger == nil {
		return fmt.Errorf("one of Logger or LogOutput must be set, select one")
	}
	return nil
}

// Server is used to initialize a new server-side connection.
// There must be at most one server-side connection. If a nil config is
// provided, the DefaultConfiguration will be used.
func Server(conn io.ReadWriteCloser, config *Config) (*Session, error) {
	if config == nil {
		config = DefaultConfig()
	}
	if err := VerifyConfig(config); err != nil {
		return nil, err
	}
	return newSession(config, conn, false), nil
}

// Client is used to initialize a new client-side connection.
// There must be at most one client-side connection.
func Client(conn io.ReadWriteCloser, config *Config) (*Session, error) {
	if config == nil {
		config = DefaultConfig()
	}

	if err := VerifyConfig(config); err != nil {
		return nil, err
	}
	return newSession(config, conn, true), nil
}
