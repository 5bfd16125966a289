package relay

// stackRoom is the room growStack makes: with the little a relay
// goroutine has on its stack where it calls growStack, a new goroutine's
// stack doubles once, to the size its first write to the tunnel would
// grow it to anyway (4 KiB with Go 1.26 on amd64: the frame's way through
// the stream, the multiplexer's write path and crypto/tls's record
// sealing). More would be kept by every held connection that has carried
// data (docs/performance.md, "A relay's stack grown early").
const stackRoom = 2 << 10

var stackRoomIndex int // 0: read by growStack so its array stays in the frame

// growStack grows the calling goroutine's stack, if it has less room than
// stackRoom. A goroutine starts with a small stack, and a stack that runs
// out is copied to a bigger one with every frame on it adjusted: deep in
// a write to the tunnel that copy costs several times what it costs here,
// a few frames from the goroutine's start. Call it where a relay goroutine
// is about to write to the tunnel for the first time, or where one that
// will end soon starts: a goroutine held idle by a connection that never
// writes keeps its small stack.
//
//go:noinline
func growStack() byte {
	var room [stackRoom]byte
	return room[stackRoomIndex]
}
