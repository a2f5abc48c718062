package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// bundleTTL bounds how long GetBundle answers from memory. Every agent
// asks on every sync; the bundle changes a few times a CA lifetime, and a
// new authority is published long before it signs anything (the CA
// prepares at half its life and activates at five sixths), so a second of
// delay costs nothing. Appends through this server's API show at once.
const bundleTTL = time.Second

// bundleCache keeps the trust domain's own bundle. The cached message is
// shared by concurrent responses, which only read it.
type bundleCache struct {
	ds datastore.DataStore
	td string

	mu sync.Mutex
	b  *types.Bundle
	at time.Time
	// prev is the last bundle read, kept across invalidations to tell
	// whether the next read differs (ver).
	prev *types.Bundle
	// gen counts invalidations: a bundle read before one is not kept.
	gen uint64
	// ver moves whenever a read finds a bundle that differs from the
	// previous one, so that the notice stream compares two numbers, not
	// two bundles, per agent.
	ver uint64
	// changed, when set, is told of every invalidation (the notice
	// stream's feed); it must not block.
	changed func()
	// ttl, when set, replaces bundleTTL: twice the events poller's
	// interval, since the poller reads the bundle after every poll
	// (refresh) and agents are served from that copy.
	ttl time.Duration
}

// refresh reads the bundle again if the cached copy is older than the
// cache's ttl, and tells changed when it differs from the last read: the
// events poller calls it after every poll, so that a bundle changed by
// another server is served, and pushed to the agents, within an interval.
func (c *bundleCache) refresh(ctx context.Context) {
	c.mu.Lock()
	before := c.ver
	c.mu.Unlock()
	// Read whatever the copy's age: agents are served from the copy
	// this keeps fresh, and only read themselves if the poller stalls.
	if _, v, err := c.read(ctx, true); err == nil && v != before && c.changed != nil {
		c.changed()
	}
}

func (c *bundleCache) get(ctx context.Context) (*types.Bundle, error) {
	b, _, err := c.getVersion(ctx)
	return b, err
}

// getVersion is get with the bundle's version (see ver).
func (c *bundleCache) getVersion(ctx context.Context) (*types.Bundle, uint64, error) {
	return c.read(ctx, false)
}

// read is getVersion; force reads the database whatever the copy's age.
func (c *bundleCache) read(ctx context.Context, force bool) (*types.Bundle, uint64, error) {
	c.mu.Lock()
	ttl := bundleTTL
	if c.ttl > 0 {
		ttl = c.ttl
	}
	if !force && c.b != nil && time.Since(c.at) < ttl {
		b, v := c.b, c.ver
		c.mu.Unlock()
		return b, v, nil
	}
	gen := c.gen
	c.mu.Unlock()
	b, err := c.ds.FetchBundle(ctx, c.td)
	if err != nil {
		// With the database away, the last bundle read is served, so
		// that agents keep syncing; a missing bundle is an error.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.prev != nil && !errors.Is(err, datastore.ErrNotFound) && ctx.Err() == nil {
			return c.prev, c.ver, nil
		}
		return nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		if c.prev == nil || !proto.Equal(c.prev, b) {
			c.ver++
		}
		c.b, c.prev, c.at = b, b, time.Now()
		return b, c.ver, nil
	}
	// Read before an invalidation: served, but not remembered, and named
	// by the version before it so that no change is hidden.
	return b, c.ver, nil
}

func (c *bundleCache) invalidate() {
	c.mu.Lock()
	c.b = nil
	c.gen++
	c.mu.Unlock()
	if c.changed != nil {
		c.changed()
	}
}
