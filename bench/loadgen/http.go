package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// BodySize is the size of the target's response body: a small API answer.
const BodySize = 512

var (
	requestKeepAlive = []byte("GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n")
	requestClose     = []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
)

func response(close bool) []byte {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(BodySize))
	if close {
		b.WriteString("\r\nConnection: close")
	}
	b.WriteString("\r\n\r\n")
	b.Write(bytes.Repeat([]byte("x"), BodySize))
	return b.Bytes()
}

var (
	responseKeepAlive = response(false)
	responseClose     = response(true)
)

// Server is the benchmark's target: it answers HTTP/1.1 requests with a
// fixed 200 response and a BodySize body; "Connection: close" ends the
// connection after the answer, anything else keeps it open (an idle
// connection costs one parked goroutine). The zero value is ready to use.
type Server struct {
	active atomic.Int64
}

// Active is the number of connections open now.
func (s *Server) Active() int64 { return s.active.Load() }

// Serve answers on ln until ln is closed, then waits for its connections
// to end and returns the Accept error.
func (s *Server) Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		s.active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.active.Add(-1)
			serveConn(c)
		}()
	}
}

func serveConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 1024)
	for {
		close, err := readRequest(br)
		if err != nil {
			return
		}
		resp := responseKeepAlive
		if close {
			resp = responseClose
		}
		if _, err := c.Write(resp); err != nil || close {
			return
		}
	}
}

// readRequest reads one request head (GET, no body) and reports whether it
// asked for "Connection: close".
func readRequest(br *bufio.Reader) (close bool, err error) {
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF && !first {
				err = io.ErrUnexpectedEOF
			}
			return false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if first {
				continue // tolerate a stray CRLF between requests
			}
			return close, nil
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Connection")) {
			close = bytes.EqualFold(bytes.TrimSpace(v), []byte("close"))
		}
	}
}

// ErrBadResponse is returned for an answer that is not a 200 with a
// Content-Length.
var ErrBadResponse = errors.New("bad HTTP response")

// ReadResponse reads one response (status line, headers, Content-Length
// body) and returns the body length. The body is discarded.
func ReadResponse(br *bufio.Reader) (int, error) {
	status, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.")) || len(status) < 12 || string(status[9:12]) != "200" {
		return 0, fmt.Errorf("%w: status line %q", ErrBadResponse, bytes.TrimSpace(status))
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, noEOF(err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Content-Length")) {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%w: Content-Length %q", ErrBadResponse, v)
			}
			length = n
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("%w: no Content-Length", ErrBadResponse)
	}
	if _, err := br.Discard(length); err != nil {
		return 0, noEOF(err)
	}
	return length, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
