package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/postern-tunnel/postern/internal/testca"
)

// TestCheckDiff: postern check --diff compares the file with the config
// the running agent has (from its control socket) and says what a reload
// would apply and what needs a restart; after the reload only the restart
// is left.
func TestCheckDiff(t *testing.T) {
	p := newStatusPair(t)
	diff := func() string {
		var out, errOut bytes.Buffer
		cmdCheck([]string{"-c", p.hubPath, "--diff"}, &out, &errOut)
		return out.String() + errOut.String()
	}
	out := diff()
	if !strings.Contains(out, "reload diff against the running agent:") || !strings.Contains(out, "no changes: agent hub runs this config") {
		t.Fatalf("check --diff on the running config:\n%s", out)
	}
	data, err := os.ReadFile(p.hubPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), `allow = ["dns:site-a.test"]`, `allow = ["dns:site-a.test", "dns:site-b.test"]`, 1)
	text = strings.Replace(text, "name = \"cut\"", "name = \"renamed\"", 1)
	text = strings.Replace(text, "format = \"json\"", "format = \"json\"\nlevel = \"debug\"", 1)
	testca.WriteFile(t, p.hubPath, []byte(text))
	out = diff()
	for _, want := range []string{
		`reload would apply: service "echo": changed allow`,
		`reload would apply: service "renamed": added`,
		`reload would apply: service "cut": removed`,
		`restart needed for: [log]`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check --diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "no changes") {
		t.Errorf("check --diff says no changes:\n%s", out)
	}

	var rout, rerr bytes.Buffer
	if code := cmdReload([]string{"-c", p.hubPath}, &rout, &rerr); code != 0 {
		t.Fatalf("postern reload: exit %d\n%s%s", code, rout.String(), rerr.String())
	}
	for _, want := range []string{`service "echo": changed allow`, `service "renamed": added`, `service "cut": removed`, "restart needed for: [log]"} {
		if !strings.Contains(rout.String(), want) {
			t.Errorf("postern reload lacks %q:\n%s", want, rout.String())
		}
	}
	out = diff()
	if strings.Contains(out, "reload would apply") || !strings.Contains(out, "restart needed for: [log]") {
		t.Errorf("check --diff after the reload: want only the restart left:\n%s", out)
	}
}
