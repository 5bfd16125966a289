//go:build unix

package tests

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2EJSONLog: a hub with [log] format = "json" writes one JSON object
// per line, and a refused stream's line carries its facts as fields (peer,
// service, stream, reason) rather than inside the message, so a log
// pipeline can query them.
func TestE2EJSONLog(t *testing.T) {
	e2eBinary(t)
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	hubTOML := e2eHubTOML(certs, "127.0.0.1:0", e2eServiceTOML("secret", e2eServe(t, testnet.Echo), "dns:nobody.test")) +
		"\n[log]\nformat = \"json\"\n"
	hub := e2eStartAgent(t, "hub", e2eWriteConfig(t, dir, "hub", hubTOML))
	hubAddr := hub.log.WaitMatch(t, 10*time.Second, regexp.MustCompile(`"msg":"tunnel server listening","listen":"([^"]+)"`))[1]
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hubAddr, "5s", "secret")))
	fwd := site.forwardAddr(t, "secret")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub", "addr="+hubAddr)

	if err := testnet.DialWriteDrain(t, fwd, []byte("let me in"), 5*time.Second); !e2eIsReset(err) {
		t.Fatalf("refused stream: the app's connection ended with %v, want connection reset", err)
	}

	line := hub.log.WaitFor(t, 5*time.Second, `"msg":"stream refused"`)
	var rec struct {
		Level    string
		Msg      string
		Stream   *float64
		PeerAddr string `json:"peer_addr"`
		Peer     string
		Client   string
		Service  string
		Reason   string
		Allow    []string
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("refused stream's line is not JSON: %v\n%s", err, line)
	}
	switch {
	case rec.Level != "WARN":
		t.Errorf("level %q, want WARN", rec.Level)
	case rec.Stream == nil || *rec.Stream <= 0:
		t.Errorf("stream field missing or not a positive number")
	case !strings.Contains(rec.Peer, `CN="site-a"`) || !strings.Contains(rec.Peer, "dns:site-a.test"):
		t.Errorf("peer %q, want the site's identity", rec.Peer)
	case rec.Service != "secret":
		t.Errorf("service %q, want secret", rec.Service)
	case !strings.HasPrefix(rec.Reason, "identity not in allow"):
		t.Errorf("reason %q, want it to start with \"identity not in allow\"", rec.Reason)
	case len(rec.Allow) != 1 || rec.Allow[0] != "dns:nobody.test":
		t.Errorf("allow %q, want the service's allow list", rec.Allow)
	case !strings.HasPrefix(rec.PeerAddr, "127.0.0.1:") || !strings.HasPrefix(rec.Client, "127.0.0.1:"):
		t.Errorf("peer_addr %q, client %q: want both loopback addresses", rec.PeerAddr, rec.Client)
	}
	if strings.Contains(rec.Msg, "site-a") || strings.Contains(rec.Msg, "secret") {
		t.Errorf("message %q carries values that belong in fields", rec.Msg)
	}
	site.log.WaitFor(t, 5*time.Second, "stream refused by peer", "via=hub", "service=secret", `reason="not allowed for`)

	// Every complete line the hub wrote so far is a JSON record.
	out := hub.log.String()
	for _, l := range strings.Split(out[:strings.LastIndex(out, "\n")], "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil || r["time"] == nil || r["level"] == nil || r["msg"] == nil {
			t.Errorf("not a JSON log record (%v): %s", err, l)
		}
	}
}
