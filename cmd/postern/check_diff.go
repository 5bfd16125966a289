package main

import (
	"io"
	"net/http"
	"strings"

	"github.com/postern-tunnel/postern/agent"
	"github.com/postern-tunnel/postern/config"
)

// checkDiff prints what `postern reload` would change in the agent that
// runs the config file: the running config comes from the agent's
// control socket (GET /config) and is compared with cfg, the file now.
func checkDiff(r *checkReport, path string, cfg *config.Config, notice io.Writer) {
	r.section("reload diff against the running agent")
	c, err := controlFor(path, "check --diff", notice)
	if err != nil {
		r.fail("cannot reach the running agent of %s: %v (is it running? postern status -c %s)", path, err, path)
		return
	}
	var res agent.ConfigResponse
	if _, err := c.do(http.MethodGet, "/config", &res); err != nil {
		r.fail("%v", err)
		return
	}
	if res.Running == nil {
		r.fail("agent %s (%s) does not report its running config: restart it with this version to use --diff", res.Agent, c.where)
		return
	}
	d := agent.DiffConfig(res.Running, cfg)
	for _, line := range d.Applied {
		r.note("reload would apply: %s", line)
	}
	if len(d.Restart) > 0 {
		r.warn("restart needed for: %s (a reload leaves them as they are)", joinComma(d.Restart))
	}
	if len(d.Applied) == 0 && len(d.Restart) == 0 {
		r.ok("no changes: agent %s runs this config", res.Agent)
	}
}

func joinComma(s []string) string { return strings.Join(s, ", ") }
