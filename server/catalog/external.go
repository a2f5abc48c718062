package catalog

import (
	"github.com/spiffe-hw/spire-hw/plugin"
	"github.com/spiffe-hw/spire-hw/plugin/catalog"
	"github.com/spiffe-hw/spire-hw/server/bundlepublisher"
	bpexternal "github.com/spiffe-hw/spire-hw/server/bundlepublisher/external"
	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	upexternal "github.com/spiffe-hw/spire-hw/server/ca/upstream/external"
	"github.com/spiffe-hw/spire-hw/server/config"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
	ccexternal "github.com/spiffe-hw/spire-hw/server/credentialcomposer/external"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	kmexternal "github.com/spiffe-hw/spire-hw/server/keymanager/external"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	naexternal "github.com/spiffe-hw/spire-hw/server/nodeattestor/external"
	"github.com/spiffe-hw/spire-hw/server/notifier"
	ntexternal "github.com/spiffe-hw/spire-hw/server/notifier/external"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	credentialcomposerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/credentialcomposer/v1"
	keymanagerv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/keymanager/v1"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	upstreamauthorityv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/upstreamauthority/v1"
)

// Notifiers are told when the trust bundle is loaded and when it changes.
// SPIRE's built-in notifiers (k8sbundle, gcs_bundle) are not compiled in;
// external ones are.
var Notifiers = catalog.Table[Deps, notifier.Notifier]{Type: config.TypeNotifier}

// BundlePublishers publish the trust bundle wherever they keep it. As with
// Notifiers, only external ones exist.
var BundlePublishers = catalog.Table[Deps, bundlepublisher.Publisher]{Type: config.TypeBundlePublisher}

func init() {
	KeyManagers.External = external(keymanagerv1.KeyManager_ServiceDesc.ServiceName, func(p *plugin.Plugin, _ Deps) keymanager.KeyManager {
		return closingKeyManager{kmexternal.New(p.Conn(), p.Name()), p}
	})
	UpstreamAuthorities.External = external(upstreamauthorityv1.UpstreamAuthority_ServiceDesc.ServiceName, func(p *plugin.Plugin, _ Deps) upstream.Authority {
		return closingUpstream{upexternal.New(p.Conn(), p.Name()), p}
	})
	NodeAttestors.External = external(nodeattestorv1.NodeAttestor_ServiceDesc.ServiceName, func(p *plugin.Plugin, d Deps) nodeattestor.Attestor {
		a := naexternal.New(p.Conn(), p.Name(), d.Config.Server.TrustDomain)
		if d.Log != nil {
			a = a.WithLog(d.Log.With("subsystem", "catalog"))
		}
		return closingNodeAttestor{a, p}
	})
	Notifiers.External = external(notifierv1.Notifier_ServiceDesc.ServiceName, func(p *plugin.Plugin, _ Deps) notifier.Notifier {
		return closingNotifier{ntexternal.New(p.Conn(), p.Name()), p}
	})
	BundlePublishers.External = external(bundlepublisherv1.BundlePublisher_ServiceDesc.ServiceName, func(p *plugin.Plugin, _ Deps) bundlepublisher.Publisher {
		return closingPublisher{bpexternal.New(p.Conn(), p.Name()), p}
	})
}

// external is the server's loader of one plugin type.
func external[T any](service string, adapt func(*plugin.Plugin, Deps) T) catalog.External[Deps, T] {
	return catalog.Loader(service, func(d Deps) plugin.Host { return d.Host }, adapt)
}

// The closing* types add the plugin process's Close to an adapter, so the
// server's shutdown (and catalog.BuildAll's clean-up) stops the process.
// Each embeds the adapter's concrete type to keep its optional interfaces
// (upstream.JWTKeyPublisher).
type closingKeyManager struct {
	keymanager.KeyManager
	p *plugin.Plugin
}

func (c closingKeyManager) Close() error { return c.p.Close() }

type closingUpstream struct {
	*upexternal.Authority
	p *plugin.Plugin
}

func (c closingUpstream) Close() error { return c.p.Close() }

type closingNodeAttestor struct {
	nodeattestor.Attestor
	p *plugin.Plugin
}

func (c closingNodeAttestor) Close() error { return c.p.Close() }

type closingNotifier struct {
	*ntexternal.Notifier
	p *plugin.Plugin
}

func (c closingNotifier) Close() error { return c.p.Close() }

type closingPublisher struct {
	*bpexternal.Publisher
	p *plugin.Plugin
}

func (c closingPublisher) Close() error { return c.p.Close() }

// CredentialComposers amend the attributes of the CA certificates and
// SVIDs the server signs. SPIRE's built-in composer (uniqueid) is not
// compiled in; external ones load, and the CA calls them in configuration
// order.
var CredentialComposers = catalog.Table[Deps, credentialcomposer.Composer]{
	Type: config.TypeCredentialComposer,
	External: external(credentialcomposerv1.CredentialComposer_ServiceDesc.ServiceName, func(p *plugin.Plugin, _ Deps) credentialcomposer.Composer {
		return closingComposer{ccexternal.New(p.Conn(), p.Name()), p}
	}),
}

type closingComposer struct {
	*ccexternal.Composer
	p *plugin.Plugin
}

func (c closingComposer) Close() error { return c.p.Close() }
