package catalog

import (
	"log/slog"

	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/plugin"
)

// Deps is what an agent plugin may need from the agent that builds it.
type Deps struct {
	// Config is the whole agent configuration; the join_token row reads
	// the token from it.
	Config *config.Config
	// Log is the agent's logger; each row adds its own attributes.
	Log *slog.Logger
	// Host loads external plugins (plugin_cmd) with the agent's trust
	// domain and host services.
	Host plugin.Host
}
