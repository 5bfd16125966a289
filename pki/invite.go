package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postern-tunnel/postern/identity"
)

// InvitationsDir is the folder, inside a CA folder, that holds one file per
// invitation: ID.json (the record) and, once redeemed, ID.used.
const InvitationsDir = "invitations"

// DefaultInviteTTL is how long an invitation may be redeemed unless asked
// otherwise.
const DefaultInviteTTL = 24 * time.Hour

// An Invitation is the CA's record of one enrollment token, kept as
// invitations/ID.json. Only the SHA-256 of the token's secret is kept: the
// file does not let anyone redeem the invitation.
type Invitation struct {
	ID           string     `json:"id"`            // hex, as in the file name
	SecretSHA256 string     `json:"secret_sha256"` // hex
	Identities   []string   `json:"identities"`    // what a certificate may carry: cn:, ou:, dns:, ip:, uri:
	Usage        string     `json:"usage"`         // client, server or both
	Validity     string     `json:"validity"`      // of the certificate, a Go duration
	Hub          string     `json:"hub"`           // host:port the token sends the site to
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	UsedAt       *time.Time `json:"used_at,omitempty"`
	UsedBy       string     `json:"used_by,omitempty"` // source address of the enrollment
	Serial       string     `json:"serial,omitempty"`  // of the certificate signed
	// Request is the certificate request redeemed (PEM): all the site sent
	// besides the token. It holds no secret.
	Request string `json:"request,omitempty"`
}

// InviteOptions describe an invitation.
type InviteOptions struct {
	Names    Names         // CommonName defaults to the first DNS name
	Usage    Usage         // 0 means UsageClient
	TTL      time.Duration // 0 means DefaultInviteTTL
	Validity time.Duration // 0 means DefaultValidity
	Hub      string        // host:port, required
	// Bound are identity patterns ([ca] identities) every granted name must
	// match; empty bounds nothing. MaxValidity ([ca] validity), when set,
	// caps Validity.
	Bound       []string
	MaxValidity time.Duration
	Now         func() time.Time // nil means time.Now
}

// Invite records a new invitation in the CA folder dir and returns its
// token. Only the CA certificate is read (for its fingerprint and name
// constraints), never the key, so it is safe to run beside a hub that
// redeems invitations from the same folder.
func Invite(dir string, opts InviteOptions) (Token, *Invitation, error) {
	now := nowOr(opts.Now)
	names := opts.Names.withDefaults()
	if err := names.validate(); err != nil {
		return Token{}, nil, err
	}
	ids := names.IdentityStrings()
	if len(ids) > MaxTokenIdentities {
		return Token{}, nil, fmt.Errorf("%d identities: an invitation grants at most %d", len(ids), MaxTokenIdentities)
	}
	for _, id := range ids {
		if len(id) > maxTokenField {
			return Token{}, nil, fmt.Errorf("identity %q is longer than %d bytes", id, maxTokenField)
		}
	}
	if err := checkHubAddress(opts.Hub); err != nil || len(opts.Hub) > maxTokenField {
		return Token{}, nil, fmt.Errorf("--hub: %q: give the host:port sites dial, like hub.example.com:7443", opts.Hub)
	}
	usage := opts.Usage
	if usage == 0 {
		usage = UsageClient
	}
	ttl, validity := opts.TTL, opts.Validity
	if ttl == 0 {
		ttl = DefaultInviteTTL
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if ttl < time.Second || validity < time.Minute {
		return Token{}, nil, fmt.Errorf("ttl %v or validity %v too short: use at least 1s and 1m", ttl, validity)
	}
	if opts.MaxValidity > 0 && validity > opts.MaxValidity {
		return Token{}, nil, fmt.Errorf("validity %s is longer than [ca] validity %s allows", days(validity), days(opts.MaxValidity))
	}
	if err := checkBound(names, opts.Bound); err != nil {
		return Token{}, nil, err
	}
	cert, err := readCACert(dir)
	if err != nil {
		return Token{}, nil, err
	}
	if err := (&CA{Cert: cert}).checkPermitted(names); err != nil {
		return Token{}, nil, err
	}
	if now.Add(validity).After(cert.NotAfter) {
		return Token{}, nil, fmt.Errorf("a certificate valid for %s would outlive the CA (valid until %s): choose a shorter --validity", days(validity), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	t := Token{Hub: opts.Hub, CA: sha256.Sum256(cert.Raw), Identities: ids, Expires: now.Add(ttl).Truncate(time.Second).UTC()}
	if _, err := rand.Read(t.ID[:]); err != nil {
		return Token{}, nil, err
	}
	if _, err := rand.Read(t.Secret[:]); err != nil {
		return Token{}, nil, err
	}
	sum := sha256.Sum256(t.Secret[:])
	inv := &Invitation{
		ID: t.IDString(), SecretSHA256: hex.EncodeToString(sum[:]), Identities: ids, Usage: usage.String(),
		Validity: validity.String(), Hub: opts.Hub, CreatedAt: now.UTC(), ExpiresAt: t.Expires,
	}
	if err := os.MkdirAll(filepath.Join(dir, InvitationsDir), 0o700); err != nil {
		return Token{}, nil, err
	}
	if err := saveInvitation(dir, inv); err != nil {
		return Token{}, nil, err
	}
	return t, inv, nil
}

// checkBound refuses a name that no pattern in bound matches. A common
// name that repeats one of the DNS names is checked as that DNS name (the
// CN defaults to the first one), so dns: patterns alone can bound a CA.
func checkBound(n Names, bound []string) error {
	if len(bound) == 0 {
		return nil
	}
	list, err := identity.ParseList(bound)
	if err != nil {
		return fmt.Errorf("[ca] identities: %w", err)
	}
	for _, nc := range n.one() {
		if nc.cert.Subject.CommonName != "" && slices.Contains(n.DNSNames, strings.ToLower(nc.cert.Subject.CommonName)) {
			continue
		}
		if _, ok := list.Match(nc.cert); !ok {
			return fmt.Errorf("%s is outside what this CA may grant ([ca] identities = %q)", nc.id, bound)
		}
	}
	return nil
}

func readCACert(dir string) (*x509.Certificate, error) {
	data, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CertFile), err)
	}
	return cert, nil
}

func invitationPath(dir, id, ext string) string {
	return filepath.Join(dir, InvitationsDir, id+ext)
}

func saveInvitation(dir string, inv *Invitation) error {
	return writeJSONMode(invitationPath(dir, inv.ID, ".json"), inv, 0o600)
}

func writeJSONMode(path string, v any, perm fs.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), perm)
}

func nowOr(f func() time.Time) time.Time {
	if f != nil {
		return f()
	}
	return time.Now()
}

// Why Redeem refuses, as Refusal.Code: short words the hub sends the site
// and both logs show.
const (
	RefusedMalformed  = "malformed"          // the token or the request does not parse
	RefusedUnknown    = "unknown-invitation" // no invitation has the token's id
	RefusedTampered   = "tampered"           // the secret or CA fingerprint does not match
	RefusedUsed       = "used"               // the invitation was redeemed already
	RefusedExpired    = "expired"            // past the invitation's expiry
	RefusedNotGranted = "not-granted"        // the request asks for a name the invitation or [ca] does not grant
	RefusedKeyType    = "key-type"           // a key type [ca] key_types does not accept
	RefusedBadRequest = "bad-request"        // the CSR's signature or key is not acceptable
)

// A Refusal is an enrollment refused for a reason the site may learn.
type Refusal struct {
	Code   string // one of the Refused… constants
	Reason string // a short sentence for the site and the hub's log
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Reason }

func refuse(code, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// RedeemOptions are the hub's rules ([ca]) and who is asking.
type RedeemOptions struct {
	Source      string        // the site's address, recorded as used_by
	Bound       []string      // [ca] identities
	KeyTypes    []string      // [ca] key_types; empty accepts every KeyType
	MaxValidity time.Duration // [ca] validity; 0: the invitation's
	Now         func() time.Time
}

// A Grant is a redeemed invitation: the certificate, its chain as PEM
// (leaf first, an intermediate CA after it) and the CA certificate sites
// trust, as PEM.
type Grant struct {
	Cert       *x509.Certificate
	ChainPEM   []byte
	CAPEM      []byte
	Invitation Invitation
}

// redeemMu keeps one process from signing two requests with two copies of
// the CA state at once (index.json would lose one).
var redeemMu sync.Mutex

// Redeem checks token against its invitation in dir and, when everything
// holds, signs the request (DER) and marks the invitation used, once: of
// two redemptions at once, in one process or two, one gets RefusedUsed.
// A refusal is a *Refusal; any other error is the CA's own trouble.
// Nothing is marked used unless a certificate is signed.
func Redeem(dir, token string, csrDER []byte, opts RedeemOptions) (*Grant, error) {
	now := nowOr(opts.Now)
	t, err := ParseToken(token)
	if err != nil {
		return nil, refuse(RefusedMalformed, "%v", strings.TrimPrefix(err.Error(), ErrTokenMalformed.Error()+": "))
	}
	inv, err := loadInvitation(dir, t)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, refuse(RefusedMalformed, "certificate request does not parse: %v", err)
	}
	if err := checkRedeem(inv, csr, opts, now); err != nil {
		return nil, err
	}
	used := invitationPath(dir, inv.ID, ".used")
	f, err := os.OpenFile(used, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, refuse(RefusedUsed, "invitation %s was already used", inv.ID)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "%s %s\n", now.UTC().Format(time.RFC3339), opts.Source)
	f.Close()
	g, err := signInvited(dir, inv, csr, opts, now)
	if err != nil {
		os.Remove(used) // nothing was signed: the invitation stays usable
		return nil, err
	}
	// From here on the marker alone keeps the invitation used.
	if err := saveInvitation(dir, &g.Invitation); err != nil {
		return nil, fmt.Errorf("invitation %s: record it used: %w", inv.ID, err)
	}
	return g, nil
}

// loadInvitation finds the token's invitation and checks its secret.
func loadInvitation(dir string, t Token) (*Invitation, error) {
	cert, err := readCACert(dir)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(cert.Raw) != t.CA {
		return nil, refuse(RefusedTampered, "the token names another CA (sha256:%x), not this hub's", t.CA[:8])
	}
	var inv Invitation
	data, err := os.ReadFile(invitationPath(dir, t.IDString(), ".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, refuse(RefusedUnknown, "no invitation %s on this hub (deleted, or from another CA folder)", t.IDString())
	}
	if err == nil {
		err = parseInvitation(data, t.IDString(), &inv)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", invitationPath(dir, t.IDString(), ".json"), err)
	}
	sum := sha256.Sum256(t.Secret[:])
	want, err := hex.DecodeString(inv.SecretSHA256)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return nil, refuse(RefusedTampered, "the token's secret does not match invitation %s", inv.ID)
	}
	return &inv, nil
}

// checkRedeem applies the invitation's and the hub's rules to a request.
func checkRedeem(inv *Invitation, csr *x509.CertificateRequest, opts RedeemOptions, now time.Time) error {
	if inv.UsedAt != nil {
		return refuse(RefusedUsed, "invitation %s was already used on %s", inv.ID, inv.UsedAt.UTC().Format(time.RFC3339))
	}
	if now.After(inv.ExpiresAt) {
		return refuse(RefusedExpired, "invitation %s expired on %s; ask for a new one", inv.ID, inv.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if err := csr.CheckSignature(); err != nil {
		return refuse(RefusedBadRequest, "certificate request signature does not verify")
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return refuse(RefusedBadRequest, "%v", err)
	}
	if kt := keyTypeOf(csr.PublicKey); len(opts.KeyTypes) > 0 && !slices.ContainsFunc(opts.KeyTypes, func(k string) bool { return strings.EqualFold(k, string(kt)) }) {
		return refuse(RefusedKeyType, "key type %s is not accepted here (accepted: %s)", kt, strings.Join(opts.KeyTypes, ", "))
	}
	asked := namesOfRequest(csr)
	if err := asked.validate(); err != nil {
		return refuse(RefusedBadRequest, "%v", err)
	}
	for _, id := range asked.IdentityStrings() {
		if !slices.Contains(inv.Identities, id) {
			return refuse(RefusedNotGranted, "%s was not granted by invitation %s (granted: %s)", id, inv.ID, strings.Join(inv.Identities, ", "))
		}
	}
	if err := checkBound(asked, opts.Bound); err != nil {
		return refuse(RefusedNotGranted, "%v", err)
	}
	return nil
}

// signInvited signs csr with the CA in dir; the grant's invitation says
// it is used.
func signInvited(dir string, inv *Invitation, csr *x509.CertificateRequest, opts RedeemOptions, now time.Time) (*Grant, error) {
	usage, err := ParseUsage(inv.Usage)
	if err != nil {
		return nil, fmt.Errorf("invitation %s: %w", inv.ID, err)
	}
	validity, err := time.ParseDuration(inv.Validity)
	if err != nil {
		return nil, fmt.Errorf("invitation %s: validity: %w", inv.ID, err)
	}
	if opts.MaxValidity > 0 && validity > opts.MaxValidity {
		validity = opts.MaxValidity
	}
	redeemMu.Lock()
	defer redeemMu.Unlock()
	ca, err := Open(dir)
	if err != nil {
		return nil, err
	}
	ca.Time = func() time.Time { return now }
	cert, err := ca.Sign(csr, SignOptions{Usage: usage, Validity: validity})
	if err != nil {
		return nil, fmt.Errorf("sign for invitation %s: %w", inv.ID, err)
	}
	at := now.UTC()
	done := *inv
	done.UsedAt, done.UsedBy, done.Serial = &at, opts.Source, FormatSerial(cert.SerialNumber)
	done.Request = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	return &Grant{Cert: cert, ChainPEM: ca.ChainPEM(cert), CAPEM: CertPEM(ca.Cert), Invitation: done}, nil
}

// parseInvitation reads an invitation record and refuses one Redeem could
// not act on safely: another id than its file name, a secret hash that is
// not 32 bytes of hex, identities, usage or validity that do not read, no
// expiry.
func parseInvitation(data []byte, id string, inv *Invitation) error {
	if err := json.Unmarshal(data, inv); err != nil {
		return fmt.Errorf("%w (restore the file, or invite again)", err)
	}
	bad := func(what string) error {
		return fmt.Errorf("%s (restore the file, or invite again)", what)
	}
	if inv.ID != id {
		return bad(fmt.Sprintf("id %q is not the file's name", inv.ID))
	}
	if h, err := hex.DecodeString(inv.SecretSHA256); err != nil || len(h) != sha256.Size {
		return bad("secret_sha256 is not a SHA-256 in hex")
	}
	if _, err := NamesFromIdentities(inv.Identities); err != nil {
		return bad("identities: " + err.Error())
	}
	if _, err := ParseUsage(inv.Usage); err != nil {
		return bad("usage: " + err.Error())
	}
	if v, err := time.ParseDuration(inv.Validity); err != nil || v <= 0 {
		return bad(fmt.Sprintf("validity %q is not a positive duration", inv.Validity))
	}
	if inv.ExpiresAt.IsZero() {
		return bad("no expires_at")
	}
	return nil
}

// Invitations lists the invitations recorded in dir, in no set order;
// records that do not read are skipped and counted in bad.
func Invitations(dir string) (invs []Invitation, bad int, err error) {
	entries, err := os.ReadDir(filepath.Join(dir, InvitationsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(id, ".") {
			continue
		}
		var inv Invitation
		data, err := os.ReadFile(filepath.Join(dir, InvitationsDir, e.Name()))
		if err == nil {
			err = parseInvitation(data, id, &inv)
		}
		if err != nil {
			bad++
			continue
		}
		if _, err := os.Stat(invitationPath(dir, id, ".used")); err == nil && inv.UsedAt == nil {
			t := time.Time{}
			inv.UsedAt = &t // claimed; the record was not updated
		}
		invs = append(invs, inv)
	}
	return invs, bad, nil
}
