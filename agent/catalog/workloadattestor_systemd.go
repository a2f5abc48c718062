package catalog

import (
	"context"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/systemd"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// newSystemd builds the "systemd" workload attestor. SPIRE's has no
// plugin_data keys, so any key is an error naming it.
func newSystemd(_ context.Context, p hclconf.Plugin, deps Deps) (workloadapi.Attestor, error) {
	if err := p.DecodeData(&struct{}{}); err != nil {
		return nil, err
	}
	return systemd.New(systemd.Config{Log: deps.Log.With("plugin", systemd.SelectorType)}), nil
}
