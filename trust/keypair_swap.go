package trust

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"strings"
)

// SwappedError is a certificate file that holds a private key and a key
// file that holds a certificate: the two paths are written the wrong way
// round. Callers that know where the paths are set (`postern check`) name
// the lines; the message alone says what to do.
type SwappedError struct {
	Cert, Key string // the paths as configured
}

func (e *SwappedError) Error() string {
	return fmt.Sprintf("cert = %s holds a private key and key = %s holds a certificate: swap them", e.Cert, e.Key)
}

// Swapped reports whether certPEM holds a private key and no certificate
// while keyPEM holds a certificate and no private key.
func Swapped(certPEM, keyPEM []byte) bool {
	return pemHas(certPEM, "PRIVATE KEY") && !pemHas(certPEM, "CERTIFICATE") &&
		pemHas(keyPEM, "CERTIFICATE") && !pemHas(keyPEM, "PRIVATE KEY")
}

// pemHas reports whether data holds a PEM block whose type ends in suffix.
func pemHas(data []byte, suffix string) bool {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, suffix) {
			return true
		}
		if len(bytes.TrimSpace(rest)) == 0 {
			return false
		}
	}
}
