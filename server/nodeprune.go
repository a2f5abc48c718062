package server

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// SPIRE's node manager prunes once an hour, give or take up to 15 minutes
// chosen once per server, so that servers sharing a database do not all
// prune at the same moment.
const (
	nodePruneInterval = time.Hour
	nodePruneJitter   = 15 * time.Minute
	// nodePruneBatch bounds one pass, as SPIRE's 1000-row query does; the
	// rest waits for the next pass.
	nodePruneBatch = 1000
)

// nodePruner is prune_attested_nodes_expired_for with prune_tofu_nodes.
type nodePruner struct {
	ds datastore.DataStore
	// expiredFor: a node whose agent SVID expired longer ago than this goes.
	expiredFor time.Duration
	// includeTOFU also prunes nodes that cannot re-attest (join tokens):
	// once pruned, such an agent needs a new token.
	includeTOFU bool
	interval    time.Duration
	clock       func() time.Time
	log         *slog.Logger
}

func newNodePruner(ds datastore.DataStore, expiredFor time.Duration, includeTOFU bool, log *slog.Logger) *nodePruner {
	jitter := time.Duration(rand.Int64N(int64(2*nodePruneJitter))) - nodePruneJitter
	return &nodePruner{ds: ds, expiredFor: expiredFor, includeTOFU: includeTOFU,
		interval: (nodePruneInterval + jitter).Truncate(time.Second), clock: time.Now, log: log}
}

// run prunes every interval until ctx ends.
func (p *nodePruner) run(ctx context.Context) error {
	p.log.Info("Periodic prune of expired nodes started", "expired_for", p.expiredFor, "include_tofu", p.includeTOFU, "interval", p.interval)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n, err := p.prune(ctx)
			if err != nil && ctx.Err() == nil {
				p.log.Error("Failed during periodic pruning of expired nodes", "error", err)
			}
			p.log.Info("Pruned expired agents", "count", n)
		}
	}
}

// prune deletes, in one pass, the nodes whose SVID expired before
// now - expiredFor, never a banned one, and a node that cannot re-attest
// only with includeTOFU. Each node is read again just before it goes, and
// deleted only if its serials are still the ones read, so that one that
// re-attested since (through any server) stays.
func (p *nodePruner) prune(ctx context.Context) (int, error) {
	before := p.clock().Add(-p.expiredFor)
	notBanned := false
	req := &datastore.ListAttestedNodesRequest{
		ByBanned:      &notBanned,
		ExpiresBefore: before.Unix(),
		Pagination:    &datastore.Pagination{Size: nodePruneBatch},
	}
	if !p.includeTOFU {
		reattestable := true
		req.ByCanReattest = &reattestable
	}
	nodes, _, err := p.ds.ListAttestedNodes(ctx, req)
	if err != nil {
		return 0, err
	}
	pruned := 0
	for _, n := range nodes {
		cur, err := p.ds.FetchAttestedNode(ctx, n.SPIFFEID)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			continue
		case err != nil:
			return pruned, err
		case cur.Banned() || cur.CertNotAfter >= before.Unix() || (!p.includeTOFU && !cur.CanReattest):
			continue
		}
		// Conditional on the serials just read: a server sharing the
		// database may re-attest or renew the node between the read and
		// the delete, and then it stays.
		_, err = p.ds.DeleteAttestedNodeIf(ctx, n.SPIFFEID, cur.Serials())
		switch {
		case errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict):
			continue
		case err != nil:
			return pruned, err
		}
		p.log.Debug("Pruned expired agent", "spiffe_id", n.SPIFFEID, "expired_at", time.Unix(cur.CertNotAfter, 0).UTC())
		pruned++
	}
	return pruned, nil
}
