// Package trust decides who may connect and says why not: certificate
// material and its reload, the TLS configurations of both tunnel ends,
// chain, CRL, OCSP and peer-pin verification (at the handshake and again
// for live tunnels), and the plain-words explanation of every refused
// handshake.
package trust
