// Package relay moves bytes between a plaintext connection and its peer:
// Stream carries it over a tunnel stream in frames (half-close, and abort
// as a TCP reset); Raw carries it over a direct TLS connection to a peer
// that is not a Postern agent (mux = false). Either way a transfer that was
// cut reaches the application as a reset, never as a clean end.
package relay
