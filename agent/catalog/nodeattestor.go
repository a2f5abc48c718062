package catalog

import (
	"context"

	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/awsiid"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/azuremsi"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/gcpiit"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/k8spsat"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/sshpop"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/x509pop"
	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
)

// NodeAttestors are the agent-side evidence collectors of node
// attestation.
var NodeAttestors = catalog.Table[Deps, nodeattestor.Attestor]{
	Type: config.TypeNodeAttestor,
	Builtins: []catalog.Builtin[Deps, nodeattestor.Attestor]{
		{Name: jointoken.Type, New: newJoinToken},
		collector(tpm.Type, tpm.New),
		collector(awsiid.Type, awsiid.New),
		collector(azuremsi.Type, azuremsi.New),
		collector(gcpiit.Type, gcpiit.New),
		collector(k8spsat.Type, k8spsat.New),
		collector(x509pop.Type, x509pop.New),
		collector(sshpop.Type, sshpop.New),
		collector(tpmdevid.Type, tpmdevid.New),
	},
}

// newJoinToken takes the token from the agent block (join_token or
// -joinToken), as SPIRE does, not from plugin_data.
func newJoinToken(_ context.Context, p hclconf.Plugin, deps Deps) (nodeattestor.Attestor, error) {
	var data struct{}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	return jointoken.New(deps.Config.Agent.JoinToken), nil
}

// collector is the row of a node attestor whose plugin_data decodes into a
// PluginData struct of its package. A constructor's error is about the
// plugin's settings, so it is reported at the plugin's block.
func collector[PD any, A nodeattestor.Attestor](name string, build func(PD) (A, error)) catalog.Builtin[Deps, nodeattestor.Attestor] {
	return catalog.Builtin[Deps, nodeattestor.Attestor]{Name: name, New: func(_ context.Context, p hclconf.Plugin, _ Deps) (nodeattestor.Attestor, error) {
		var data PD
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := build(data)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	}}
}
