package acmecert

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testca"
)

func TestRenewAt(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "Test ACME CA")
	now := time.Now()
	nb := now.Add(-time.Hour).Truncate(time.Second)
	leaf := ca.Issue(t, testca.Options{CN: "hub.example.com", DNS: []string{"hub.example.com"}, NotBefore: nb, NotAfter: nb.Add(90 * time.Hour)})
	path := filepath.Join(dir, "cert.pem")
	testca.WriteFile(t, path, leaf.CertPEM)

	for _, tc := range []struct {
		name    string
		m       *Manager
		want    time.Time
		hasLeaf bool
	}{
		{"missing", &Manager{CertPath: filepath.Join(dir, "none.pem"), Domains: []string{"hub.example.com"}}, now, false},
		{"a third of the lifetime", &Manager{CertPath: path, Domains: []string{"hub.example.com"}}, nb.Add(60 * time.Hour), true},
		{"renew_before", &Manager{CertPath: path, Domains: []string{"hub.example.com"}, RenewBefore: 10 * time.Hour}, nb.Add(80 * time.Hour), true},
		{"renew_before longer than the lifetime", &Manager{CertPath: path, Domains: []string{"hub.example.com"}, RenewBefore: 1000 * time.Hour}, nb.Add(9 * time.Hour), true},
		{"a domain added to the config", &Manager{CertPath: path, Domains: []string{"hub.example.com", "hub2.example.com"}}, now, true},
	} {
		got, l := tc.m.RenewAt(now)
		if !got.Equal(tc.want) || (l != nil) != tc.hasLeaf {
			t.Errorf("%s: RenewAt = %v (leaf %v), want %v (leaf %v)", tc.name, got, l != nil, tc.want, tc.hasLeaf)
		}
	}
	testca.WriteFile(t, path, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	if got, l := (&Manager{CertPath: path}).RenewAt(now); !got.Equal(now) || l != nil {
		t.Errorf("garbage certificate: RenewAt = %v, %v; want now", got, l)
	}
}

// FuzzRenewAt: whatever the certificate file holds, renewal is now (the
// file does not parse) or falls within the certificate's lifetime.
func FuzzRenewAt(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"), int64(0))
	f.Add([]byte("not pem"), int64(time.Hour))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, before int64) {
		path := filepath.Join(dir, "cert.pem")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		m := &Manager{CertPath: path, RenewBefore: time.Duration(before)}
		at, leaf := m.RenewAt(now)
		if leaf == nil {
			if !at.Equal(now) {
				t.Fatalf("no certificate, but renewal at %v", at)
			}
			return
		}
		if leaf.NotAfter.After(leaf.NotBefore) && (at.Before(leaf.NotBefore) || at.After(leaf.NotAfter)) {
			t.Fatalf("renewal at %v outside the lifetime %v..%v", at, leaf.NotBefore, leaf.NotAfter)
		}
	})
}

func TestHTTPHandler(t *testing.T) {
	m := &Manager{}
	m.setToken("/.well-known/acme-challenge/tok", "tok.thumb")
	h := m.HTTPHandler()
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/.well-known/acme-challenge/tok", 200, "tok.thumb"},
		{"GET", "/.well-known/acme-challenge/other", 404, ""},
		{"POST", "/.well-known/acme-challenge/tok", 404, ""},
		{"GET", "/", 404, ""},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.code || (tc.body != "" && w.Body.String() != tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body.String(), tc.code, tc.body)
		}
	}
	m.setToken("/.well-known/acme-challenge/tok", "")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.well-known/acme-challenge/tok", nil))
	if w.Code != 404 {
		t.Errorf("a finished challenge is still served: %d", w.Code)
	}
}
