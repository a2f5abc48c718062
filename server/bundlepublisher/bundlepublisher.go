// Package bundlepublisher defines where the server publishes its trust
// bundle for relying parties outside SPIFFE's reach (an S3 object, a
// Kubernetes ConfigMap, ...): SPIRE's BundlePublisher plugin type. The
// notifier.Watcher calls every Publisher at start-up and whenever the
// bundle changes; implementations live in subpackages (external adapts SDK
// plugins).
package bundlepublisher

import (
	"context"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Publisher publishes the trust domain's bundle somewhere.
type Publisher interface {
	// Name is the plugin's name in the configuration, for logs.
	Name() string
	// PublishBundle publishes b. Publishing the same bundle again must be
	// harmless: a failed publication is retried.
	PublishBundle(ctx context.Context, b *types.Bundle) error
}
