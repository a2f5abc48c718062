package external

import (
	"context"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	bundlepublisherv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/bundlepublisher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/plugin/facade"
	"github.com/spiffe-hw/spire-hw/server/bundlepublisher"
	"github.com/spiffe-hw/spire-hw/server/pluginbundle"
)

// Publisher is a bundlepublisher.Publisher backed by an external plugin.
type Publisher struct {
	client bundlepublisherv1.BundlePublisherClient
	f      facade.Facade
}

var _ bundlepublisher.Publisher = (*Publisher)(nil)

// New adapts the BundlePublisher plugin reachable over conn; name is the
// plugin's name in the configuration.
func New(conn grpc.ClientConnInterface, name string) *Publisher {
	return &Publisher{client: bundlepublisherv1.NewBundlePublisherClient(conn), f: facade.Facade{Type: "bundlepublisher", Name: name}}
}

// Name returns the plugin's name.
func (p *Publisher) Name() string { return p.f.Name }

// PublishBundle sends b to the plugin.
func (p *Publisher) PublishBundle(ctx context.Context, b *types.Bundle) error {
	pb, err := pluginbundle.FromAPI(b)
	if err != nil {
		return p.f.Errorf(codes.InvalidArgument, "bundle is invalid: %v", err)
	}
	_, err = p.client.PublishBundle(ctx, &bundlepublisherv1.PublishBundleRequest{Bundle: pb})
	return p.f.WrapErr(err)
}
