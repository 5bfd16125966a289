// Package wire holds the codecs of Postern's stream protocol: the open
// request, the status, and the DATA / CLOSE_WRITE / ABORT frames that carry
// a forwarded connection. docs/protocol.md is their normative description.
//
// Package wire imports nothing else from Postern.
package wire
