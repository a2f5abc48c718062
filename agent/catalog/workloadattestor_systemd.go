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
func newSystemd(context.Context, hclconf.Plugin, Deps) (workloadapi.Attestor, error) {
	return nil, errors.New("WorkloadAttestor \"systemd\" is not built into this agent yet")
}
