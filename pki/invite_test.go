package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// inviteCA makes a CA folder for invitation tests.
func inviteCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func csrFor(t *testing.T, n Names, kt KeyType) ([]byte, crypto.Signer) {
	t.Helper()
	key, err := GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Request(n, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(p)
	return b.Bytes, key
}

func siteB() Names { return Names{DNSNames: []string{"site-b.example.com"}} }

func refusalCode(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

func TestInviteRedeem(t *testing.T) {
	dir := inviteCA(t)
	tok, inv, err := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub.example.com:7443"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tok.Identities, []string{"cn:site-b.example.com", "dns:site-b.example.com"}) || inv.Usage != "client" {
		t.Fatalf("token identities %q, usage %s", tok.Identities, inv.Usage)
	}
	// The record keeps only a hash of the secret.
	rec, err := os.ReadFile(filepath.Join(dir, InvitationsDir, tok.IDString()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rec), tokHex(tok.Secret[:])) || !strings.Contains(string(rec), inv.SecretSHA256) {
		t.Fatalf("record holds the secret or not its hash:\n%s", rec)
	}
	if fi, _ := os.Stat(filepath.Join(dir, InvitationsDir, tok.IDString()+".json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v", fi.Mode().Perm())
	}
	csr, key := csrFor(t, siteB(), "")
	g, err := Redeem(dir, tok.String(), csr, RedeemOptions{Source: "192.0.2.7:5555"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) || g.Cert.DNSNames[0] != "site-b.example.com" {
		t.Fatalf("certificate %v for %v", g.Cert.Subject, g.Cert.DNSNames)
	}
	if ca, _ := ParseCertPEM(g.CAPEM); sha256.Sum256(ca.Raw) != tok.CA {
		t.Fatal("CA bundle is not the CA the token names")
	}
	var saved Invitation
	rec, _ = os.ReadFile(filepath.Join(dir, InvitationsDir, tok.IDString()+".json"))
	if err := json.Unmarshal(rec, &saved); err != nil || saved.UsedAt == nil || saved.UsedBy != "192.0.2.7:5555" || saved.Serial != FormatSerial(g.Cert.SerialNumber) {
		t.Fatalf("record after use: %s (%v)", rec, err)
	}
	ca, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ca.Lookup(g.Cert.SerialNumber); !ok {
		t.Fatal("signed certificate not in index.json")
	}
	_, err = Redeem(dir, tok.String(), csr, RedeemOptions{})
	if refusalCode(err) != RefusedUsed {
		t.Fatalf("second redeem: %v", err)
	}
}

func tokHex(b []byte) string {
	const h = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(h[c>>4])
		s.WriteByte(h[c&15])
	}
	return s.String()
}

func TestRedeemConcurrentOnce(t *testing.T) {
	dir := inviteCA(t)
	tok, _, err := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443"})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t, siteB(), "")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = Redeem(dir, tok.String(), csr, RedeemOptions{}) })
	}
	wg.Wait()
	var ok, used int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case refusalCode(err) == RefusedUsed:
			used++
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != 1 || used != len(errs)-1 {
		t.Fatalf("%d granted, %d refused as used", ok, used)
	}
}

func TestRedeemRefusals(t *testing.T) {
	dir := inviteCA(t)
	now := time.Now()
	clock := func() time.Time { return now }
	tok, _, err := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443", TTL: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := csrFor(t, siteB(), "")
	other := inviteCA(t)
	otherTok, _, _ := Invite(other, InviteOptions{Names: siteB(), Hub: "hub:7443"})

	tampered := tok
	tampered.Secret[0] ^= 1
	unknown := tok
	unknown.ID[0] ^= 1
	foreign := otherTok // a token from another CA folder, sent to this one
	wider, _ := csrFor(t, Names{DNSNames: []string{"site-b.example.com", "db.example.com"}}, "")
	cn, _ := csrFor(t, Names{CommonName: "Site B", DNSNames: []string{"site-b.example.com"}}, "")
	ed, _ := csrFor(t, siteB(), KeyEd25519)

	for _, tc := range []struct {
		name, token string
		csr         []byte
		opts        RedeemOptions
		code, want  string
	}{
		{"malformed", tok.String()[:len(TokenPrefix)+24], good, RedeemOptions{}, RefusedMalformed, "cut short"},
		{"garbage csr", tok.String(), []byte{0x30, 1, 2}, RedeemOptions{}, RefusedMalformed, "certificate request does not parse"},
		{"tampered secret", tampered.String(), good, RedeemOptions{}, RefusedTampered, "secret does not match invitation " + tok.IDString()},
		{"unknown", unknown.String(), good, RedeemOptions{}, RefusedUnknown, "no invitation " + unknown.IDString()},
		{"another CA", foreign.String(), good, RedeemOptions{}, RefusedTampered, "names another CA"},
		{"expired", tok.String(), good, RedeemOptions{Now: func() time.Time { return now.Add(time.Hour + time.Second) }}, RefusedExpired, "expired on"},
		{"extra name", tok.String(), wider, RedeemOptions{Now: clock}, RefusedNotGranted, "dns:db.example.com was not granted"},
		{"other cn", tok.String(), cn, RedeemOptions{Now: clock}, RefusedNotGranted, "cn:Site B was not granted"},
		{"bound", tok.String(), good, RedeemOptions{Now: clock, Bound: []string{"dns:*.sites.example.com"}}, RefusedNotGranted, "outside what this CA may grant"},
		{"key type", tok.String(), ed, RedeemOptions{Now: clock, KeyTypes: []string{"ecdsa-p256"}}, RefusedKeyType, "key type ed25519 is not accepted here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Redeem(dir, tc.token, tc.csr, tc.opts)
			if refusalCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %s: …%s…", err, tc.code, tc.want)
			}
		})
	}
	// No refusal used the invitation up.
	if _, err := Redeem(dir, tok.String(), good, RedeemOptions{Now: clock}); err != nil {
		t.Fatalf("after refusals: %v", err)
	}
	// A narrower request than granted is fine.
	tok2, _, _ := Invite(dir, InviteOptions{Names: Names{DNSNames: []string{"a.example.com", "b.example.com"}}, Hub: "hub:7443"})
	narrow, _ := csrFor(t, Names{DNSNames: []string{"a.example.com"}}, "")
	if _, err := Redeem(dir, tok2.String(), narrow, RedeemOptions{}); err != nil {
		t.Fatalf("narrower request: %v", err)
	}
}

func TestInviteRefusals(t *testing.T) {
	dir := inviteCA(t)
	for _, tc := range []struct {
		opts InviteOptions
		want string
	}{
		{InviteOptions{Hub: "hub:7443"}, "no identity"},
		{InviteOptions{Names: siteB(), Hub: "hub"}, `--hub: "hub": give the host:port`},
		{InviteOptions{Names: siteB(), Hub: "hub:0"}, `--hub: "hub:0"`},
		{InviteOptions{Names: siteB(), Hub: "hub:7443", Bound: []string{"dns:*.sites.example.com"}}, `dns:site-b.example.com is outside what this CA may grant`},
		{InviteOptions{Names: siteB(), Hub: "hub:7443", Validity: 100 * 24 * time.Hour, MaxValidity: 90 * 24 * time.Hour}, "validity 100d is longer than [ca] validity 90d allows"},
		{InviteOptions{Names: siteB(), Hub: "hub:7443", Validity: 20 * 365 * 24 * time.Hour}, "would outlive the CA"},
	} {
		if _, _, err := Invite(dir, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want …%s…", tc.opts, err, tc.want)
		}
	}
	// The bound admits names it matches.
	n := Names{CommonName: "b.sites.example.com", DNSNames: []string{"b.sites.example.com"}}
	if _, _, err := Invite(dir, InviteOptions{Names: n, Hub: "hub:7443", Bound: []string{"dns:*.sites.example.com"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Invite(filepath.Join(t.TempDir(), "none"), InviteOptions{Names: siteB(), Hub: "hub:7443"}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no CA: %v", err)
	}
}

func TestKeyTypeOfNamesEveryType(t *testing.T) {
	for _, kt := range KeyTypes() {
		if kt == KeyRSA4096 || kt == KeyRSA3072 {
			continue // slow to make; the switch is the same as rsa-2048's
		}
		k, err := GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		if got := keyTypeOf(k.Public()); got != kt {
			t.Errorf("keyTypeOf(%s) = %s", kt, got)
		}
	}
}

// TestInviteIntermediate: a hub that signs with a name-constrained
// intermediate (root kept offline) invites only within its constraints,
// and the chain it grants carries the intermediate, which is the CA the
// token names.
func TestInviteIntermediate(t *testing.T) {
	root, err := Init(filepath.Join(t.TempDir(), "root"), InitOptions{Intermediates: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	inter, err := InitIntermediate(dir, root, IntermediateOptions{CommonName: "Sites CA", Permit: Constraints{DNS: []string{"sites.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443"}); err == nil || !strings.Contains(err.Error(), "outside what the CA") {
		t.Fatalf("invite outside the constraints: %v", err)
	}
	n := Names{DNSNames: []string{"b.sites.example.com"}}
	tok, _, err := Invite(dir, InviteOptions{Names: n, Hub: "hub:7443"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.CA != sha256.Sum256(inter.Cert.Raw) {
		t.Fatal("the token does not name the intermediate")
	}
	csr, _ := csrFor(t, n, "")
	g, err := Redeem(dir, tok.String(), csr, RedeemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(g.ChainPEM, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Fatalf("chain:\n%s", g.ChainPEM)
	}
}

func TestInvitationsList(t *testing.T) {
	dir := inviteCA(t)
	a, _, _ := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443"})
	b, _, _ := Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443"})
	Invite(dir, InviteOptions{Names: siteB(), Hub: "hub:7443"})
	csr, _ := csrFor(t, siteB(), "")
	if _, err := Redeem(dir, a.String(), csr, RedeemOptions{}); err != nil {
		t.Fatal(err)
	}
	// b claimed by a redemption that never recorded it (a crash): used.
	os.WriteFile(filepath.Join(dir, InvitationsDir, b.IDString()+".used"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, InvitationsDir, "ffff.json"), []byte("{}"), 0o600)
	invs, bad, err := Invitations(dir)
	if err != nil || len(invs) != 3 || bad != 1 {
		t.Fatalf("%d invitations, %d bad, %v", len(invs), bad, err)
	}
	var used int
	for _, inv := range invs {
		if inv.UsedAt != nil {
			used++
		}
	}
	if used != 2 {
		t.Fatalf("%d used, want 2", used)
	}
	if _, err := Redeem(dir, b.String(), csr, RedeemOptions{}); refusalCode(err) != RefusedUsed {
		t.Fatalf("claimed invitation: %v", err)
	}
}
