package external

import (
	"context"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	notifierv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/notifier/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/notifier"
	"github.com/spiffe-hw/spire-hw/server/pluginbundle"
)

// Notifier is a notifier.Notifier backed by an external plugin.
type Notifier struct {
	client notifierv1.NotifierClient
	f      facade.Facade
}

var _ notifier.Notifier = (*Notifier)(nil)

// New adapts the Notifier plugin reachable over conn; name is the plugin's
// name in the configuration.
func New(conn grpc.ClientConnInterface, name string) *Notifier {
	return &Notifier{client: notifierv1.NewNotifierClient(conn), f: facade.Facade{Type: "notifier", Name: name}}
}

// Name returns the plugin's name.
func (n *Notifier) Name() string { return n.f.Name }

// NotifyBundleLoaded calls the plugin's NotifyAndAdvise with a BundleLoaded
// event.
func (n *Notifier) NotifyBundleLoaded(ctx context.Context, b *types.Bundle) error {
	pb, err := pluginbundle.FromAPI(b)
	if err != nil {
		return n.f.Errorf(codes.InvalidArgument, "bundle is invalid: %v", err)
	}
	_, err = n.client.NotifyAndAdvise(ctx, &notifierv1.NotifyAndAdviseRequest{
		Event: &notifierv1.NotifyAndAdviseRequest_BundleLoaded{BundleLoaded: &notifierv1.BundleLoaded{Bundle: pb}},
	})
	return n.f.WrapErr(err)
}

// NotifyBundleUpdated calls the plugin's Notify with a BundleUpdated event.
func (n *Notifier) NotifyBundleUpdated(ctx context.Context, b *types.Bundle) error {
	pb, err := pluginbundle.FromAPI(b)
	if err != nil {
		return n.f.Errorf(codes.InvalidArgument, "bundle is invalid: %v", err)
	}
	_, err = n.client.Notify(ctx, &notifierv1.NotifyRequest{
		Event: &notifierv1.NotifyRequest_BundleUpdated{BundleUpdated: &notifierv1.BundleUpdated{Bundle: pb}},
	})
	return n.f.WrapErr(err)
}
