package api

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/events"
)

// FollowEvents hands the entry, node and bundle caches to an events poller
// (server/events), whose Sink a becomes: entries are then changed by the
// entry events instead of reloaded when the revision moves, nodes are
// forgotten at their events, and the bundle is read again after every poll
// of the given interval (agents served from that copy). sync is the poller's Sync, which a request runs
// first after a write through this server so that it sees the write.
// Call it before serving.
func (a *API) FollowEvents(sync func(ctx context.Context) error, interval time.Duration) {
	a.entries.follow = sync
	a.bundle.ttl = 2 * interval
}

var _ events.Sink = (*API)(nil)

// Reload implements events.Sink: every entry is read again and every
// cached node dropped.
func (a *API) Reload(ctx context.Context) error {
	a.nodes.forgetAll()
	return a.entries.reload(ctx)
}

// EntriesChanged implements events.Sink.
func (a *API) EntriesChanged(ctx context.Context, ids []string) error {
	return a.entries.apply(ctx, ids)
}

// NodesChanged implements events.Sink: the nodes are read from the
// database at their next call, so a ban or an eviction made through
// another server is in force from then on.
// The notice stream of such an agent held here ends at once, as one
// banned or evicted through this server does.
func (a *API) NodesChanged(ctx context.Context, ids []string) error {
	for _, id := range ids {
		a.nodes.forget(id)
		if a.notices.lookup(id) == nil {
			continue
		}
		n, err := a.cfg.DataStore.FetchAttestedNode(ctx, id)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			a.notices.evict(id, agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %q was deleted", id))
		case err != nil:
			return err
		case n.Banned():
			a.notices.evict(id, agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %q is banned", id))
		}
	}
	return nil
}

// Polled implements events.Sink: the bundle has no events; it is read
// again, and a change pushed to the agents.
func (a *API) Polled(ctx context.Context) { a.bundle.refresh(ctx) }
