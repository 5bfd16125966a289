package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// keyLines records where each key is written: by table ("" for the top
// level, "tls", "client#0", "server#1", ...) and key name.
type keyLines map[string]map[string]int

func (k keyLines) record(data []byte) {
	table, counts := "", map[string]int{}
	forEachLine(data, func(n int, text string) {
		if name, ok := arrayHeader(text); ok {
			table = fmt.Sprintf("%s#%d", name, counts[name])
			counts[name]++
			return
		}
		if name, ok := tableHeader(text); ok {
			table = name
			return
		}
		key, _, ok := strings.Cut(strings.TrimSpace(text), "=")
		key = strings.Trim(strings.TrimSpace(key), `"`)
		if !ok || key == "" || strings.HasPrefix(key, "#") {
			return
		}
		if k[table] == nil {
			k[table] = map[string]int{}
		}
		if _, seen := k[table][key]; !seen {
			k[table][key] = n
		}
	})
}

// TLSKeyAt says where key (cert, key, ca, ...) of the i-th [[server]]
// (kind "server") or [[client]] (kind "client") is set: in its own table
// when written there, otherwise in [tls]. It returns "FILE:LINE" with the
// file's base name, or the [tls] table's name when the line is unknown.
func (c *Config) TLSKeyAt(kind string, i int, key string) string {
	file := filepath.Base(c.Path)
	if n := c.lines[fmt.Sprintf("%s#%d", kind, i)][key]; n > 0 {
		return fmt.Sprintf("%s:%d", file, n)
	}
	if n := c.lines["tls"][key]; n > 0 {
		return fmt.Sprintf("%s:%d", file, n)
	}
	return file + " [tls]"
}
