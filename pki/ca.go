package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names inside a CA folder; see the package documentation.
const (
	CertFile      = "ca.crt"
	KeyFile       = "ca.key"
	IndexFile     = "index.json"
	RevokedFile   = "revoked.json"
	CRLNumberFile = "crlnumber"
	CRLFile       = "ca.crl"
)

// Defaults and the clock-skew allowance.
const (
	DefaultCAValidity  = 10 * 365 * 24 * time.Hour
	DefaultValidity    = 90 * 24 * time.Hour
	DefaultCRLValidity = 7 * 24 * time.Hour
	DefaultCAName      = "Postern CA"
	// ClockSkew is how far NotBefore (and a CRL's thisUpdate) is set in the
	// past, so a peer whose clock runs a little slow accepts new files.
	ClockSkew = 5 * time.Minute
)

// ErrExists is returned by Init when the folder already holds a CA.
var ErrExists = errors.New("a CA already exists there")

// InitOptions describe a new CA. The zero value is a valid choice.
type InitOptions struct {
	CommonName string        // subject CN; "" means DefaultCAName
	KeyType    KeyType       // "" means ecdsa-p256
	Validity   time.Duration // 0 means DefaultCAValidity
	// Intermediates lets the CA sign partners' intermediate CAs (path
	// length 1) with SignIntermediate; by default it signs only leaves.
	Intermediates bool
}

// A CA is a certificate authority: its certificate, its key, and the record
// of what it signed and revoked. A CA with an empty Dir lives only in memory
// (handy in tests); otherwise every change is saved to Dir at once.
//
// The methods of a CA are safe for concurrent use; Cert, Key, Dir and Time
// must not change after the first method call.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	Dir  string

	// Time returns the current time; nil means time.Now.
	Time func() time.Time

	mu        sync.Mutex
	index     []Record
	revoked   []Revocation
	crlNumber int64 // number of the last CRL signed
}

// Record is one certificate the CA signed, as kept in index.json.
type Record struct {
	Serial     string    `json:"serial"` // lowercase hex
	Subject    string    `json:"subject"`
	Identities []string  `json:"identities"` // what Postern matches: cn:, dns:, …, sha256:, spki:
	Usage      string    `json:"usage"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	IssuedAt   time.Time `json:"issued_at"`
}

// Revocation is one revoked serial, as kept in revoked.json.
type Revocation struct {
	Serial    string    `json:"serial"` // lowercase hex
	RevokedAt time.Time `json:"revoked_at"`
	Reason    int       `json:"reason"` // RFC 5280 CRLReason
	Subject   string    `json:"subject,omitempty"`
	SPKI      string    `json:"spki,omitempty"` // public key fingerprint, when known: a key-compromise revocation bars the key
}

type indexFile struct {
	Certificates []Record `json:"certificates"`
}

type revokedFile struct {
	Revoked []Revocation `json:"revoked"`
}

// NewCA makes a CA in memory only: nothing is written to disk.
func NewCA(opts InitOptions) (*CA, error) {
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	cn := opts.CommonName
	if cn == "" {
		cn = DefaultCAName
	}
	if err := checkName("CA name", cn); err != nil {
		return nil, err
	}
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultCAValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("CA validity %v is negative", validity)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	if opts.Intermediates {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 1, false
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Init creates a new CA in dir (created 0700 if missing) and writes its
// certificate, key and an empty CRL. It refuses a folder that already holds
// ca.crt or ca.key (ErrExists).
func Init(dir string, opts InitOptions) (*CA, error) {
	for _, name := range []string{CertFile, KeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), ErrExists)
		}
	}
	ca, err := NewCA(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca.Dir = dir
	if err := ca.writeNew(); err != nil {
		return nil, err
	}
	return ca, nil
}

// Open loads the CA in dir. Only ca.crt and ca.key must exist; the key must
// belong to the certificate, and the certificate must be a CA that may sign
// certificates.
func Open(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CertFile), err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, KeyFile), err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not belong to %s: put the matching key and certificate together", filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile))
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s (%s) is not a CA certificate (no CA basic constraint or certSign key usage)", filepath.Join(dir, CertFile), cert.Subject)
	}
	ca := &CA{Cert: cert, Key: key, Dir: dir}
	if err := ca.syncState(); err != nil {
		return nil, err
	}
	return ca, nil
}

// Issued returns the records of every certificate the CA signed.
func (ca *CA) Issued() []Record {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return append([]Record(nil), ca.index...)
}

// Revoked returns every revocation, oldest first.
func (ca *CA) Revoked() []Revocation {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return append([]Revocation(nil), ca.revoked...)
}

// Lookup finds the record of a serial this CA signed.
func (ca *CA) Lookup(serial *big.Int) (Record, bool) {
	s := FormatSerial(serial)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, r := range ca.index {
		if r.Serial == s {
			return r, true
		}
	}
	return Record{}, false
}

func (ca *CA) now() time.Time {
	if ca.Time != nil {
		return ca.Time()
	}
	return time.Now()
}

// saveIndex writes index.json; the caller holds ca.mu (or owns ca alone).
func (ca *CA) saveIndex() error {
	if ca.Dir == "" {
		return nil
	}
	return writeJSON(filepath.Join(ca.Dir, IndexFile), indexFile{Certificates: nonNil(ca.index)})
}

// saveRevoked writes revoked.json; the caller holds ca.mu (or owns ca alone).
func (ca *CA) saveRevoked() error {
	if ca.Dir == "" {
		return nil
	}
	return writeJSON(filepath.Join(ca.Dir, RevokedFile), revokedFile{Revoked: nonNil(ca.revoked)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w (fix or restore the file from a backup)", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o644)
}

// writeFileAtomic replaces path with data: readers see the old file or the
// new one, never half of it. The file has mode perm from its creation on.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return writeAtomic(path, data, perm, nil)
}

// writeAtomic is writeFileAtomic; when like is set, the new file also gets
// like's owner and group where the OS allows (ReplaceFile).
func writeAtomic(path string, data []byte, perm fs.FileMode, like fs.FileInfo) error {
	tmp, err := stageFile(path, data, perm, like)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// stageFile writes data, synced, to a new temporary file in path's folder
// with mode perm (and like's owner and group, when set) and returns its
// name; the caller renames it over path or removes it. Nothing is left
// behind when it fails.
func stageFile(path string, data []byte, perm fs.FileMode, like fs.FileInfo) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // created 0600
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	if like != nil {
		keepOwner(f, like)
	}
	if perm != 0o600 {
		err = f.Chmod(perm)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// FormatSerial writes a serial number as lowercase hex, as index.json,
// revoked.json and `postern pki show` do.
func FormatSerial(n *big.Int) string {
	return n.Text(16)
}

// ParseSerial reads a serial number in hex, as FormatSerial writes it;
// colons (aa:bb:cc, as openssl prints) and a 0x prefix are accepted.
func ParseSerial(s string) (*big.Int, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "0x")
	h = strings.ReplaceAll(h, ":", "")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || h == "" || n.Sign() <= 0 || strings.HasPrefix(h, "-") || strings.HasPrefix(h, "+") {
		return nil, fmt.Errorf("serial %q is not a hex number (like 3f9a0c…, as `postern pki show` prints it)", s)
	}
	return n, nil
}
