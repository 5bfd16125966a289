package trust

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
)

// rawFiles is the content of an endpoint's files, read but not parsed.
type rawFiles struct {
	files         Files
	cert, key, ca []byte
	crl           [][]byte
}

// afterCertRead, when set by a test, runs between reading the certificate
// and the key: where a swap of the files lands worst.
var afterCertRead func()

// readFiles reads every file of f. The error names the file and its role.
func readFiles(f Files) (*rawFiles, error) {
	r := &rawFiles{files: f}
	var err error
	if r.cert, err = readCert(f.Cert); err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	if afterCertRead != nil {
		afterCertRead()
	}
	if r.key, err = readKey(f.Key); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if r.ca, err = os.ReadFile(f.CA); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	for _, path := range f.CRL {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("crl: %w", err)
		}
		r.crl = append(r.crl, data)
	}
	return r, nil
}

// sum hashes every file's content, each prefixed by its length so that no
// two different sets of files hash alike.
func (r *rawFiles) sum() [32]byte {
	h := sha256.New()
	add := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	add(r.cert)
	add(r.key)
	add(r.ca)
	for _, c := range r.crl {
		add(c)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Reload reads the files of the current material again. When their content
// has changed it loads them and stores the new material for new handshakes;
// live tunnels are not touched. When reading or loading fails, the current
// material stays and the error says exactly what is wrong. changed reports
// whether new material was stored.
func (c *Credentials) Reload() (changed bool, err error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	old := c.Load()
	raw, err := readFiles(old.Files)
	if err != nil {
		return false, err
	}
	if raw.sum() == old.sum {
		return false, nil
	}
	m, err := raw.material()
	if err != nil {
		// The files may have changed while they were read one after the
		// other (a directory swap between the cert and the key): read them
		// once more, and use that state when it differs and loads.
		again, rerr := readFiles(old.Files)
		if rerr != nil || again.sum() == raw.sum() {
			return false, err
		}
		if again.sum() == old.sum {
			return false, nil
		}
		if m, err = again.material(); err != nil {
			return false, err
		}
	}
	c.Store(m)
	c.warnKeyPermission(m)
	return true, nil
}
