package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// nodeTTL bounds how long a node read for authentication is trusted. Every
// change made through this server's API takes effect at once (forget), and
// a serial the cached node does not know is always checked against the
// database. A ban or eviction made by another server sharing the database
// is forgotten here when the events poller reads its event (within
// cache_reload_interval), or else (no poller, or the database away) after
// nodeTTL at most. It is longer than an agent's sync
// interval (5 s) so that a fleet's syncs hit the cache: at 5 s every other
// call of every agent queried the database.
const nodeTTL = 30 * time.Second

// maxCachedNodes bounds the cache; past it the cache starts over.
const maxCachedNodes = 1 << 17

// nodeCache keeps attested nodes for authenticating agent calls. Without it
// every call of every agent costs a query: at fleet scale, three per sync,
// the largest share of the server's CPU.
type nodeCache struct {
	ds    datastore.DataStore
	clock func() time.Time
	// ttl is nodeTTL, or max_attested_node_info_staleness when set (0:
	// every call reads the database, SPIRE's default).
	ttl time.Duration

	mu sync.Mutex
	m  map[string]cachedNode
	// gen counts forgets: a node read from the database before a forget
	// is not stored after it, or a ban racing with an agent's call could
	// be cached away for nodeTTL.
	gen uint64
}

type cachedNode struct {
	node *datastore.AttestedNode
	at   time.Time
}

// maxNodeStaleness bounds how long past its ttl a node read before the
// database went away still authenticates its agent: a ban written through
// another server just before the outage, which this server had no time to
// read, is then in force after it at the latest.
const maxNodeStaleness = 5 * time.Minute

func newNodeCache(ds datastore.DataStore, clock func() time.Time, ttl time.Duration) *nodeCache {
	return &nodeCache{ds: ds, clock: clock, ttl: ttl, m: make(map[string]cachedNode)}
}

// fetch returns a copy of the node, from the cache unless fresh is set or
// the cached copy is older than the cache's ttl. Callers may modify the copy; its
// Selectors slice is shared and read-only.
func (c *nodeCache) fetch(ctx context.Context, id string, fresh bool) (*datastore.AttestedNode, error) {
	now := c.clock()
	var stale *datastore.AttestedNode
	if !fresh {
		c.mu.Lock()
		e, ok := c.m[id]
		c.mu.Unlock()
		if ok && now.Sub(e.at) < c.ttl && !e.at.After(now) {
			n := *e.node
			return &n, nil
		}
		if ok && c.ttl > 0 && now.Sub(e.at) < c.ttl+maxNodeStaleness {
			stale = e.node
		}
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	node, err := c.ds.FetchAttestedNode(ctx, id)
	if err != nil {
		// The database is away (not a missing node): a copy past its
		// ttl, by at most maxNodeStaleness, still authenticates the
		// agent's call, so that agents keep syncing while it is; forget
		// and fresh reads never get here, nor does a copy of an operator
		// who asked for every call to read the database (ttl 0).
		if stale != nil && !errors.Is(err, datastore.ErrNotFound) && ctx.Err() == nil {
			n := *stale
			return &n, nil
		}
		return nil, err
	}
	kept := *node
	c.mu.Lock()
	if c.gen == gen {
		if len(c.m) >= maxCachedNodes {
			c.m = make(map[string]cachedNode)
		}
		c.m[id] = cachedNode{node: &kept, at: now}
	}
	c.mu.Unlock()
	return node, nil
}

// forget drops id, after this server changed its node.
func (c *nodeCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.gen++
	c.mu.Unlock()
}

// forgetAll drops every node (the events poller's full reload).
func (c *nodeCache) forgetAll() {
	c.mu.Lock()
	c.m = make(map[string]cachedNode)
	c.gen++
	c.mu.Unlock()
}
