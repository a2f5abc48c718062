package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// readier is a plugin that can say whether it can serve now (an HSM whose
// token is present).
type readier interface{ Ready(context.Context) error }

// readiness reports the server ready while the datastore answers and every
// plugin that can tell (key manager, upstream authority) is ready.
func readiness(ds datastore.DataStore, plugins ...any) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := ds.EntriesRevision(ctx); err != nil {
			return fmt.Errorf("datastore unavailable: %w", err)
		}
		for _, p := range plugins {
			if r, ok := p.(readier); ok && r != nil {
				if err := r.Ready(ctx); err != nil {
					return errors.New("signing key unavailable")
				}
			}
		}
		return nil
	}
}
