//go:build cgo

package hsm

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// Supported is true in builds that can use tokens (built with cgo).
const Supported = true

// A session is one logged-in crypto11 context: a module, a token and a PIN.
// Sessions are kept for the life of the process (a reload or a second
// endpoint with the same token reuses it) until CloseAll.
type session struct {
	ctx    *crypto11.Context
	slot   uint
	label  string
	pinSum [32]byte
}

var (
	mu       sync.Mutex // guards sessions, and every module load and token probe
	sessions = map[string]*session{}
)

// sessionKey says which token u selects in which module.
func sessionKey(u *URI) string {
	slot := ""
	if u.Slot != nil {
		slot = fmt.Sprint(*u.Slot)
	}
	return strings.Join([]string{u.ModulePath, u.Token, u.Serial, slot}, "\x00")
}

// open returns the logged-in session for u's token. The errors name the
// module, the token (listing those present when it is missing) and the PIN
// source when the token rejects the PIN.
func open(u *URI) (*session, error) {
	pin, err := u.PIN()
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	k, pinSum := sessionKey(u), sha256.Sum256([]byte(pin))
	if s, ok := sessions[k]; ok {
		// A PKCS#11 login holds for the whole token: a second login
		// with another PIN would "succeed" as already logged in.
		if s.pinSum != pinSum {
			return nil, fmt.Errorf("token %q is already logged in by this process with another PIN: use the same pin-source for every object in one token", s.label)
		}
		return s, nil
	}
	slot, label, err := findSlot(u)
	if err != nil {
		return nil, err
	}
	cfg := &crypto11.Config{Path: u.ModulePath, SlotNumber: new(int), Pin: pin, LoginNotSupported: pin == ""}
	*cfg.SlotNumber = int(slot)
	ctx, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, explainLogin(u, label, err)
	}
	s := &session{ctx: ctx, slot: slot, label: label, pinSum: pinSum}
	sessions[k] = s
	return s, nil
}

// explainLogin names what the token said when opening a session failed.
func explainLogin(u *URI, label string, err error) error {
	var p11 pkcs11.Error
	if errors.As(err, &p11) {
		src := "pin-source " + u.PINSource
		if u.PINSource == "" {
			src = "the PIN"
		}
		switch p11 {
		case pkcs11.CKR_PIN_INCORRECT:
			return fmt.Errorf("token %q: PIN rejected (CKR_PIN_INCORRECT): check %s", label, src)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("token %q: PIN locked (CKR_PIN_LOCKED): too many wrong PINs; the security officer must unblock it", label)
		case pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_INVALID:
			return fmt.Errorf("token %q: PIN not accepted (%s): check %s", label, p11, src)
		case pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
			return fmt.Errorf("token %q: user PIN not initialised (CKR_USER_PIN_NOT_INITIALIZED): initialise the token's user PIN", label)
		}
	}
	return fmt.Errorf("token %q: open session: %w", label, err)
}

// findSlot finds the slot holding u's token. The module is loaded and
// initialised for the probe and finalised again unless another session
// already holds it (the caller holds mu).
func findSlot(u *URI) (slot uint, label string, err error) {
	p := pkcs11.New(u.ModulePath)
	if p == nil {
		return 0, "", fmt.Errorf("module-path %s: cannot load this PKCS#11 library: check the path (is the package installed?)", u.ModulePath)
	}
	defer p.Destroy()
	switch err := p.Initialize(); {
	case err == nil:
		defer p.Finalize()
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	default:
		return 0, "", fmt.Errorf("module-path %s: initialise: %w", u.ModulePath, err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, "", fmt.Errorf("module-path %s: list slots: %w", u.ModulePath, err)
	}
	var present []string
	for _, s := range slots {
		info, err := p.GetTokenInfo(s)
		if err != nil || info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		l := strings.TrimRight(info.Label, " \x00")
		serial := strings.TrimRight(info.SerialNumber, " \x00")
		present = append(present, fmt.Sprintf("%q (slot %d)", l, s))
		if (u.Token == "" || u.Token == l) && (u.Serial == "" || u.Serial == serial) && (u.Slot == nil || *u.Slot == s) {
			return s, l, nil
		}
	}
	if len(present) == 0 {
		return 0, "", fmt.Errorf("%s not found: module %s shows no initialised token (initialise one, e.g. softhsm2-util --init-token)", u.TokenName(), u.ModulePath)
	}
	return 0, "", fmt.Errorf("%s not found (tokens: %s)", u.TokenName(), strings.Join(present, ", "))
}

// Key is a private key in a token.
type Key struct {
	crypto.Signer
	Token string // the token's label
	Slot  uint
}

// Open finds the private key u names and returns it as a crypto.Signer;
// signatures are made inside the token. ECDSA and RSA keys are supported.
func Open(u *URI) (*Key, error) {
	if u.Type == "cert" {
		return nil, fmt.Errorf("%s names a certificate (type=cert): use it as cert, not key", u)
	}
	s, err := open(u)
	if err != nil {
		return nil, err
	}
	keys, err := s.ctx.FindKeyPairs(u.ID, label(u))
	if err != nil {
		return nil, fmt.Errorf("token %q: find key %s: %w", s.label, u.ObjectName(), err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no private key with %s in token %q (slot %d): check object= (postern pki request --key %s makes one)", u.ObjectName(), s.label, s.slot, u)
	}
	if len(keys) > 1 {
		return nil, fmt.Errorf("%d private keys with %s in token %q: add id= to choose one", len(keys), u.ObjectName(), s.label)
	}
	return &Key{Signer: keys[0], Token: s.label, Slot: s.slot}, nil
}

// Certificate reads the certificate u names from its token.
func Certificate(u *URI) (*x509.Certificate, error) {
	if u.Type == "private" {
		return nil, fmt.Errorf("%s names a private key (type=private): use it as key, not cert", u)
	}
	s, err := open(u)
	if err != nil {
		return nil, err
	}
	c, err := s.ctx.FindCertificate(u.ID, label(u), nil)
	if err != nil {
		return nil, fmt.Errorf("token %q: find certificate %s: %w", s.label, u.ObjectName(), err)
	}
	if c == nil {
		return nil, fmt.Errorf("no certificate with %s in token %q (slot %d): check object=, or keep the certificate in a file (cert = PATH)", u.ObjectName(), s.label, s.slot)
	}
	return c, nil
}

// ImportCertificate stores cert in u's token under u's label and id.
func ImportCertificate(u *URI, cert *x509.Certificate) error {
	s, err := open(u)
	if err != nil {
		return err
	}
	id := u.ID
	if len(id) == 0 {
		id = []byte(u.Object)
	}
	if err := s.ctx.ImportCertificateWithLabel(id, label(u), cert); err != nil {
		return fmt.Errorf("token %q: store certificate %s: %w", s.label, u.ObjectName(), err)
	}
	return nil
}

// Generate makes a new key pair of kind ("ecdsa-p256", "ecdsa-p384",
// "rsa-2048", "rsa-3072", "rsa-4096") inside u's token, labelled and
// identified as u says. The private key never leaves the token. An
// existing key with the same label or id is refused.
func Generate(u *URI, kind string) (*Key, error) {
	s, err := open(u)
	if err != nil {
		return nil, err
	}
	if existing, err := s.ctx.FindKeyPairs(u.ID, label(u)); err == nil && len(existing) > 0 {
		return nil, fmt.Errorf("token %q already holds a key with %s: choose another object= (or use that key)", s.label, u.ObjectName())
	}
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	var signer crypto.Signer
	switch kind {
	case "", "ecdsa-p256":
		signer, err = s.ctx.GenerateECDSAKeyPairWithLabel(id, label(u), elliptic.P256())
	case "ecdsa-p384":
		signer, err = s.ctx.GenerateECDSAKeyPairWithLabel(id, label(u), elliptic.P384())
	case "rsa-2048", "rsa-3072", "rsa-4096":
		bits := map[string]int{"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}[kind]
		signer, err = s.ctx.GenerateRSAKeyPairWithLabel(id, label(u), bits)
	default:
		return nil, fmt.Errorf("key type %s cannot be made in a token: use ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("token %q: generate %s key %s: %w", s.label, kind, u.ObjectName(), err)
	}
	return &Key{Signer: signer, Token: s.label, Slot: s.slot}, nil
}

func label(u *URI) []byte {
	if u.Object == "" {
		return nil
	}
	return []byte(u.Object)
}

// CloseAll logs out of every token and unloads the modules. Keys opened
// before stop working. Tests call it between tokens.
func CloseAll() {
	mu.Lock()
	defer mu.Unlock()
	for k, s := range sessions {
		_ = s.ctx.Close()
		delete(sessions, k)
	}
}
