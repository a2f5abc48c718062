// Package notifier tells plugins about the server's trust bundle: SPIRE's
// Notifier plugin type (the Notifier interface; external adapts SDK
// plugins) and the Watcher that drives notifiers and bundle publishers from
// the bundle in the datastore.
package notifier

import (
	"context"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// Notifier is told when the bundle is loaded at start-up and whenever it
// changes.
type Notifier interface {
	// Name is the plugin's name in the configuration, for logs.
	Name() string
	// NotifyBundleLoaded is SPIRE's NotifyAndAdvise: the notifier may veto
	// start-up by failing, so the server does not run with a bundle the
	// notifier could not handle.
	NotifyBundleLoaded(ctx context.Context, b *types.Bundle) error
	// NotifyBundleUpdated is SPIRE's Notify: a failure is logged, not
	// fatal.
	NotifyBundleUpdated(ctx context.Context, b *types.Bundle) error
}
