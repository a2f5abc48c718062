package x509pop

import (
	"text/template"

	"github.com/spiffe-hw/spire-hw/server/nodeattestor/agentpath"
)

// DefaultAgentPathTemplate is SPIRE's default agent_path_template.
const DefaultAgentPathTemplate = agentpath.Default

// ParseAgentPathTemplate parses an agent_path_template (see agentpath.Parse).
func ParseAgentPathTemplate(text string) (*template.Template, error) {
	return agentpath.Parse("x509pop", text)
}

// agentIDFromTemplate is agentpath.AgentID.
var agentIDFromTemplate = agentpath.AgentID
