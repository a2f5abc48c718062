// Package agentpath renders SPIRE's agent_path_template: a Go text/template
// that attestors offering it use to name the agent ID under /spire/agent,
// with the functions SPIRE's templates have (see funcs). Every attestor
// that offers the key parses it here, so that one template means the same
// in each.
package agentpath

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Default is SPIRE's default agent_path_template.
const Default = "/{{ .PluginName }}/{{ .Fingerprint }}"

// Parse parses an agent_path_template; plugin prefixes errors. A missing
// key is an error, not "<no value>", so a typo cannot name every agent
// alike.
func Parse(plugin, text string) (*template.Template, error) {
	t, err := template.New("agent_path_template").Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: agent_path_template: %w", plugin, err)
	}
	return t, nil
}

// AgentID renders t with data and places the result under /spire/agent.
// The path is validated as a SPIFFE ID path, so values from the
// certificate cannot produce "..", empty segments or escapes.
func AgentID(td spiffeid.TrustDomain, t *template.Template, data any) (spiffeid.ID, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent_path_template: %w", err)
	}
	p := b.String()
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if err := spiffeid.ValidatePath(p); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent path %q: %w", p, err)
	}
	return spiffeid.FromPath(td, "/spire/agent"+p)
}
