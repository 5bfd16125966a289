package trust

import (
	"log/slog"

	"github.com/postern-tunnel/postern/hsm"
)

// ServiceGroup is the group the packages create for the agent. A private key
// readable by this group (and by nobody else) is as intended: the files
// belong to root:postern, mode 0640, and the agent runs as postern.
const ServiceGroup = "postern"

// warnKeyPermission logs what KeyPermissionProblem finds in m's key file.
// It is called when material is first given a logger (agent start) and
// after each reload that stored new material.
func (c *Credentials) warnKeyPermission(m *Material) {
	if m == nil || m.Files.Key == "" {
		return
	}
	if hsm.IsURI(m.Files.Key) {
		if file, p := pinProblem(m.Files.Key); p != "" {
			c.logger().Warn("token PIN file is readable by more than this agent",
				slog.String("pin_source", file), slog.String("problem", p))
		}
		return
	}
	if p := KeyPermissionProblem(m.Files.Key); p != "" {
		c.logger().Warn("private key file is readable by more than this agent",
			slog.String("key", m.Files.Key), slog.String("problem", p))
	}
}
