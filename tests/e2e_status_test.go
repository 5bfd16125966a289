//go:build unix

package tests

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/internal/testnet"
)

// TestE2EStatusReload: `postern status --json` and `postern reload`, run as
// commands beside `postern run` processes, reach them over their control
// sockets with no [admin] endpoint and no other setup.
func TestE2EStatusReload(t *testing.T) {
	bin := e2eBinary(t)
	dir := t.TempDir()
	certs := e2eNewCerts(t, dir)
	hubPath := e2eWriteConfig(t, dir, "hub", e2eHubTOML(certs, "127.0.0.1:0", e2eServiceTOML("echo", e2eServe(t, testnet.Echo), "dns:site-a.test")))
	hub := e2eStartAgent(t, "hub", hubPath)
	hub.log.WaitFor(t, 10*time.Second, "control socket listening", "socket=")
	site := e2eStartAgent(t, "site", e2eWriteConfig(t, dir, "site", e2eSiteTOML(certs, hub.serverAddr(t), "5s", "echo")))
	fwd := site.forwardAddr(t, "echo")
	site.log.WaitFor(t, 10*time.Second, "tunnel connected", "tunnel=hub")

	c := testnet.Dial(t, fwd)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	c.Close()
	hub.log.WaitFor(t, 10*time.Second, `msg="stream closed"`, "service=echo", "outcome=clean", "sent=4", "received=4")

	out, err := exec.Command(bin, "status", "--json", "-c", hubPath).Output()
	if err != nil {
		t.Fatalf("postern status --json: %v\n%s", err, out)
	}
	var st agent.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("postern status --json: %v\n%s", err, out)
	}
	if st.Agent != "hub" || len(st.Tunnels) != 1 || st.Tunnels[0].PeerLabel != "dns:site-a.test" ||
		st.Tunnels[0].TLSVersion != "TLS 1.3" || len(st.Services) != 1 || st.Services[0].Total != 1 {
		t.Errorf("status: %s", out)
	}

	out, err = exec.Command(bin, "reload", "-c", hubPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "certificate files unchanged") {
		t.Fatalf("postern reload: %v\n%s", err, out)
	}
	hub.log.WaitFor(t, 5*time.Second, "reload requested", "by=\"postern reload\"")
}
