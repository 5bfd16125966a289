// Command gorelay is the simplest two-ended mutual-TLS relay Go allows:
// one TLS connection per relayed connection, one goroutine per direction
// copying with io.Copy, the net package's defaults (GOMAXPROCS = every
// CPU). It is a reference point for the benchmarks, the shape of the Go
// tunnels that carry each connection on its own TLS connection, measured
// on the same machine as Postern (docs/performance.md, "What would close
// the gaps"); it is not part of Postern. bench/scripts/gorelay.sh runs it
// in place of Postern in bench/scripts/pair.sh.
//
//	gorelay -mode client -listen ADDR -connect HOST:PORT -servername NAME -cert C -key K -ca CA
//	gorelay -mode server -listen ADDR -connect TARGET -cert C -key K -ca CA
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"log"
	"net"
	"os"
)

func main() {
	mode := flag.String("mode", "client", "client (plaintext in, TLS out) or server (TLS in, plaintext out)")
	listen := flag.String("listen", "", "address to accept on")
	connect := flag.String("connect", "", "address to connect each accepted connection to")
	cert := flag.String("cert", "", "certificate file")
	key := flag.String("key", "", "key file")
	ca := flag.String("ca", "", "CA file the peer's certificate must chain to")
	name := flag.String("servername", "", "name the server certificate must carry (client)")
	flag.Parse()

	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("%s: no certificate", *ca)
	}

	var ln net.Listener
	var dial func() (net.Conn, error)
	switch *mode {
	case "server":
		ln, err = tls.Listen("tcp", *listen, &tls.Config{
			Certificates: []tls.Certificate{kp},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
		})
		dial = func() (net.Conn, error) { return net.Dial("tcp", *connect) }
	case "client":
		ln, err = net.Listen("tcp", *listen)
		cfg := &tls.Config{
			Certificates:       []tls.Certificate{kp},
			RootCAs:            pool,
			ServerName:         *name,
			MinVersion:         tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(64),
		}
		dial = func() (net.Conn, error) { return tls.Dial("tcp", *connect, cfg) }
	default:
		log.Fatalf("-mode %q: use client or server", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relay(c, dial)
	}
}

// relay copies between c and a new connection from dial until either
// direction ends, then closes both.
func relay(c net.Conn, dial func() (net.Conn, error)) {
	defer c.Close()
	d, err := dial()
	if err != nil {
		log.Print(err)
		return
	}
	defer d.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(d, c); done <- struct{}{} }()
	go func() { io.Copy(c, d); done <- struct{}{} }()
	<-done
}
