package catalog

import (
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	kmexternal "github.com/spiffe-hw/spire-hw/agent/keymanager/external"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	naexternal "github.com/spiffe-hw/spire-hw/agent/nodeattestor/external"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	ssexternal "github.com/spiffe-hw/spire-hw/agent/svidstore/external"
	"github.com/spiffe-hw/spire-hw/agent/workloadapi"
	waexternal "github.com/spiffe-hw/spire-hw/agent/workloadattestor/external"
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/keymanager/v1"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	workloadattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/workloadattestor/v1"
)

// SVIDStores keep the SVIDs of entries with store_svid outside the
// Workload API. SPIRE's built-in stores (aws_secretsmanager,
// gcp_secretmanager, azure_key_vault) are not compiled in; external ones
// are.
var SVIDStores = catalog.Table[Deps, svidstore.Store]{Type: config.TypeSVIDStore}

func init() {
	KeyManagers.External = external(keymanagerv1.KeyManager_ServiceDesc.ServiceName, func(p *plugin.Plugin) keymanager.KeyManager {
		return closingKeyManager{kmexternal.New(p.Conn(), p.Name()), p}
	})
	NodeAttestors.External = external(nodeattestorv1.NodeAttestor_ServiceDesc.ServiceName, func(p *plugin.Plugin) nodeattestor.Attestor {
		return closingNodeAttestor{naexternal.New(p.Conn(), p.Name()), p}
	})
	WorkloadAttestors.External = external(workloadattestorv1.WorkloadAttestor_ServiceDesc.ServiceName, func(p *plugin.Plugin) workloadapi.Attestor {
		return closingWorkloadAttestor{waexternal.New(p.Conn(), p.Name()), p}
	})
	SVIDStores.External = external(svidstorev1.SVIDStore_ServiceDesc.ServiceName, func(p *plugin.Plugin) svidstore.Store {
		return closingSVIDStore{ssexternal.New(p.Conn(), p.Name()), p}
	})
}

// external is the agent's loader of one plugin type.
func external[T any](service string, adapt func(*plugin.Plugin) T) catalog.External[Deps, T] {
	return catalog.Loader(service, func(d Deps) plugin.Host { return d.Host }, func(p *plugin.Plugin, _ Deps) T { return adapt(p) })
}

// The closing* types add the plugin process's Close to an adapter, so the
// agent's shutdown (and catalog.BuildAll's clean-up) stops the process.
// Each embeds the adapter's concrete type to keep its optional methods
// (the node attestor's Done).
type closingKeyManager struct {
	*kmexternal.KeyManager
	p *plugin.Plugin
}

func (c closingKeyManager) Close() error { return c.p.Close() }

type closingNodeAttestor struct {
	*naexternal.Attestor
	p *plugin.Plugin
}

func (c closingNodeAttestor) Close() error { return c.p.Close() }

type closingWorkloadAttestor struct {
	*waexternal.Attestor
	p *plugin.Plugin
}

func (c closingWorkloadAttestor) Close() error { return c.p.Close() }

type closingSVIDStore struct {
	*ssexternal.Store
	p *plugin.Plugin
}

func (c closingSVIDStore) Close() error { return c.p.Close() }
