package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// entryPruneInterval is SPIRE's registration manager cadence.
const entryPruneInterval = 5 * time.Minute

// entryPruner is SPIRE's registration entry manager: it deletes entries
// whose expires_at has passed, so that an expired entry stops authorizing
// SVIDs and leaves the listings.
type entryPruner struct {
	ds       datastore.DataStore
	metrics  *telemetry.Metrics
	interval time.Duration
	clock    func() time.Time
	log      *slog.Logger
}

func newEntryPruner(ds datastore.DataStore, m *telemetry.Metrics, log *slog.Logger) *entryPruner {
	return &entryPruner{ds: ds, metrics: m, interval: entryPruneInterval, clock: time.Now,
		log: log.With("retry_interval", entryPruneInterval)}
}

// run prunes at once and then every interval until ctx ends. SPIRE waits
// for its first tick; pruning at start removes entries that expired while
// the server was down without leaving them valid for five more minutes.
func (p *entryPruner) run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.prune(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("Failed pruning registration entries", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prune is one pass, counted as SPIRE's registration_entry.manager.prune
// call.
func (p *entryPruner) prune(ctx context.Context) (err error) {
	call := p.metrics.StartCall("registration_entry", "manager", "prune")
	defer call.Done(&err)
	pruned, err := p.ds.PruneEntries(ctx, p.clock())
	for _, e := range pruned {
		p.log.Info("Pruned an expired registration", "entry_id", e.Id,
			"spiffe_id", idString(e.SpiffeId), "parent_id", idString(e.ParentId))
	}
	return err
}

// idString writes an entry's ID as its SPIFFE ID URI.
func idString(id *types.SPIFFEID) string {
	return "spiffe://" + id.GetTrustDomain() + id.GetPath()
}
