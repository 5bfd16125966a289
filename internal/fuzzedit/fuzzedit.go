// Package fuzzedit mutates a valid input by a few small edits that a
// fuzzer chooses: fuzz targets seeded with structured data (a signed OCSP
// answer, a certificate request) stay small and near valid, which keeps
// Go's minimiser fast.
package fuzzedit

// Apply changes a copy of b by 4-byte edits: kind, offset (2 bytes),
// value; kind 0 sets a byte, 1 flips bits, 2 truncates, 3 inserts.
func Apply(b, patch []byte) []byte {
	out := append([]byte(nil), b...)
	for n := 0; len(patch) >= 4 && n < 16; n, patch = n+1, patch[4:] {
		off := int(patch[1])<<8 | int(patch[2])
		v := patch[3]
		switch patch[0] % 4 {
		case 0:
			if len(out) > 0 {
				out[off%len(out)] = v
			}
		case 1:
			if len(out) > 0 {
				out[off%len(out)] ^= v
			}
		case 2:
			out = out[:off%(len(out)+1)]
		case 3:
			i := off % (len(out) + 1)
			out = append(out[:i], append([]byte{v}, out[i:]...)...)
		}
	}
	return out
}
