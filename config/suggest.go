package config

import (
	"fmt"
	"net"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// Suggestions for input that is nearly right: the message says what was
// probably meant, so the fix is a copy and paste.

// suggestKey returns a known key of the table that holds k and is within
// two edits of k's last part, or "".
func suggestKey(k toml.Key) string {
	if len(k) == 0 {
		return ""
	}
	t := reflect.TypeOf(Config{})
	for _, part := range k[:len(k)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			return ""
		}
		t = f.Type
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return ""
		}
	}
	last := strings.ToLower(k[len(k)-1])
	best, bestDist := "", 3
	for _, name := range tomlKeys(t) {
		if d := editDistance(last, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	return best
}

// tomlKeys lists the keys a struct accepts, including those of embedded
// structs ([[server]] and [[client]] take every [tls] key).
func tomlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(f.Type)...)
			continue
		}
		if name := tagName(f); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if sub, ok := fieldByTag(f.Type, name); ok {
				return sub, true
			}
			continue
		}
		if tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// suggestAddress turns an IPv6 address with a port but no brackets
// ("::1:7445") into the bracketed form, or returns "".
func suggestAddress(s string) string {
	i := strings.LastIndex(s, ":")
	if i <= 0 || strings.Contains(s, "[") {
		return ""
	}
	host, port := s[:i], s[i+1:]
	if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || port == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// suggestIdentity turns an identity written like a distinguished name or in
// capitals ("CN=site-a", "DNS:hub") into the pattern form ("cn:site-a"), or
// returns "".
func suggestIdentity(a string) string {
	for _, k := range identityKinds {
		kind := strings.TrimSuffix(k, ":")
		if len(a) <= len(kind) || !strings.EqualFold(a[:len(kind)], kind) {
			continue
		}
		if sep := a[len(kind)]; sep == '=' || sep == ':' {
			if v := strings.TrimSpace(a[len(kind)+1:]); v != "" {
				return k + v
			}
		}
	}
	return ""
}

// didYouMean formats a suggestion for the end of a message.
func didYouMean(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(": did you mean %q?", s)
}
