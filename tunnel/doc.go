// Package tunnel is one established tunnel: a TLS connection carrying
// multiplexed streams (hashicorp/yamux, which nothing outside this package
// sees). A Tunnel opens and accepts streams, retires (takes no new ones
// while its streams finish), closes, and says why it ended.
package tunnel
