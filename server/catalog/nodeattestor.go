package catalog

import (
	"context"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/awsiid"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/azuremsi"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/gcpiit"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/k8spsat"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/sshpop"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpm"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/tpmdevid"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor/x509pop"
)

// NodeAttestors are the server-side verifiers of node attestation.
var NodeAttestors = catalog.Table[Deps, nodeattestor.Attestor]{
	Type: config.TypeNodeAttestor,
	Builtins: []catalog.Builtin[Deps, nodeattestor.Attestor]{
		{Name: jointoken.PluginName, New: newJoinToken},
		verifier(tpm.PluginName, func(d tpm.PluginData, deps Deps) (*tpm.Attestor, error) {
			return tpm.NewFromPluginData(deps.Config.Server.TrustDomain, d, deps.DataStore)
		}),
		verifier(awsiid.PluginName, func(d awsiid.PluginData, deps Deps) (*awsiid.Attestor, error) {
			return awsiid.NewFromPluginData(deps.Config.Server.TrustDomain, d, deps.DataStore)
		}),
		verifier(azuremsi.PluginName, func(d azuremsi.PluginData, deps Deps) (*azuremsi.Attestor, error) {
			return azuremsi.NewFromPluginData(deps.Config.Server.TrustDomain, d, deps.DataStore)
		}),
		verifier(gcpiit.PluginName, func(d gcpiit.PluginData, deps Deps) (*gcpiit.Attestor, error) {
			return gcpiit.NewFromPluginData(deps.Config.Server.TrustDomain, d, deps.DataStore)
		}),
		verifier(k8spsat.PluginName, func(d k8spsat.PluginData, deps Deps) (*k8spsat.Attestor, error) {
			return k8spsat.NewFromPluginData(deps.Config.Server.TrustDomain, d)
		}),
		verifier(x509pop.PluginName, func(d x509pop.PluginData, deps Deps) (*x509pop.Attestor, error) {
			return x509pop.NewFromPluginData(deps.Config.Server.TrustDomain, d)
		}),
		verifier(sshpop.PluginName, func(d sshpop.PluginData, deps Deps) (*sshpop.Attestor, error) {
			return sshpop.NewFromPluginData(deps.Config.Server.TrustDomain, d)
		}),
		verifier(tpmdevid.PluginName, func(d tpmdevid.PluginData, deps Deps) (*tpmdevid.Attestor, error) {
			return tpmdevid.NewFromPluginData(deps.Config.Server.TrustDomain, d)
		}),
	},
}

func newJoinToken(_ context.Context, p hclconf.Plugin, deps Deps) (nodeattestor.Attestor, error) {
	var data struct{}
	if err := p.DecodeData(&data); err != nil {
		return nil, err
	}
	return jointoken.New(deps.Config.Server.TrustDomain, deps.DataStore, nil), nil
}

// verifier is the row of a node attestor whose plugin_data decodes into a
// PluginData struct of its package. A constructor's error is about the
// plugin's settings, so it is reported at the plugin's block.
func verifier[PD any, A nodeattestor.Attestor](name string, build func(PD, Deps) (A, error)) catalog.Builtin[Deps, nodeattestor.Attestor] {
	return catalog.Builtin[Deps, nodeattestor.Attestor]{Name: name, New: func(_ context.Context, p hclconf.Plugin, deps Deps) (nodeattestor.Attestor, error) {
		var data PD
		if err := p.DecodeData(&data); err != nil {
			return nil, err
		}
		a, err := build(data, deps)
		if err != nil {
			return nil, p.Errorf("", "%v", err)
		}
		return a, nil
	}}
}
