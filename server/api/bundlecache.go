package api

import (
	"context"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
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
	// gen counts invalidations: a bundle read before one is not kept.
	gen uint64
}

func (c *bundleCache) get(ctx context.Context) (*types.Bundle, error) {
	c.mu.Lock()
	if c.b != nil && time.Since(c.at) < bundleTTL {
		b := c.b
		c.mu.Unlock()
		return b, nil
	}
	gen := c.gen
	c.mu.Unlock()
	b, err := c.ds.FetchBundle(ctx, c.td)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if gen == c.gen {
		c.b, c.at = b, time.Now()
	}
	c.mu.Unlock()
	return b, nil
}

func (c *bundleCache) invalidate() {
	c.mu.Lock()
	c.b = nil
	c.gen++
	c.mu.Unlock()
}
