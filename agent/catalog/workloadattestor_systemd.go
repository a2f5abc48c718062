package catalog

import (
	"context"
	"errors"

	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// newSystemd builds the "systemd" workload attestor. It is being written
// (issue 13); until then a configuration that names it fails at start-up
// rather than running without the selectors its entries need.
func newSystemd(_ context.Context, p hclconf.Plugin, _ Deps) (workloadapi.Attestor, error) {
	if err := p.DecodeData(&struct{}{}); err != nil {
		return nil, err
	}
	return nil, errors.New("WorkloadAttestor \"systemd\" is not built into this agent yet")
}
