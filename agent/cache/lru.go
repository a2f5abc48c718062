package cache

import (
	"cmp"
	"slices"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// The X.509-SVID limit (SPIRE's x509_svid_cache_max_size) is the manager's
// policy; the cache only keeps what it needs to apply it: when each entry
// was last asked for by a workload, and which entries a live subscriber
// matches. SPIRE's rules: an entry a subscriber matches keeps its SVID
// whatever the limit (a workload is never denied an identity it holds), the
// others are evicted least recently asked for first.

// touchLocked records that a workload asked for these entries now.
func (c *Cache) touchLocked(entries []*types.Entry) {
	if len(entries) == 0 {
		return
	}
	now := c.clock().UnixNano()
	for _, e := range entries {
		c.access[e.Id] = now
	}
}

// Missing reports whether an entry a workload with these selectors matches
// has no SVID it could be given now, and counts the call as that
// workload's use of its entries (for eviction).
func (c *Cache) Missing(selectors []*types.Selector) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	matched := c.matchLocked(newSelectorSet(selectors))
	c.touchLocked(matched)
	now := c.clock()
	for _, e := range matched {
		if s, ok := c.svids[e.Id]; !ok || !usable(e, s, now) {
			return true
		}
	}
	return false
}

// Active returns the IDs of the entries a live subscriber (or a Want)
// matches.
func (c *Cache) Active() map[string]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.activeLocked()
}

func (c *Cache) activeLocked() map[string]struct{} {
	out := map[string]struct{}{}
	add := func(set map[selectorKey]struct{}) {
		for _, e := range c.matchLocked(set) {
			out[e.Id] = struct{}{}
		}
	}
	for s := range c.subs {
		add(s.set)
	}
	for w := range c.wants {
		add(w.set)
	}
	return out
}

// want is a workload waiting for its SVIDs before it subscribes.
type want struct{ set map[selectorKey]struct{} }

// Want counts a workload with these selectors as subscribed (Active) until
// release is called: the manager mints its SVIDs before it subscribes.
func (c *Cache) Want(selectors []*types.Selector) (release func()) {
	w := &want{set: newSelectorSet(selectors)}
	c.mu.Lock()
	c.wants[w] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.wants, w)
		c.mu.Unlock()
	}
}

// Evict drops SVIDs until at most limit are held, least recently asked for
// first, never one a live subscriber matches (so more than limit may
// remain). It returns how many it dropped. limit <= 0 keeps everything.
func (c *Cache) Evict(limit int) int {
	c.mu.Lock()
	extra := len(c.svids) - limit
	if limit <= 0 || extra <= 0 {
		c.mu.Unlock()
		return 0
	}
	active := c.activeLocked()
	ids := make([]string, 0, len(c.svids))
	for id := range c.svids {
		if _, ok := active[id]; !ok {
			ids = append(ids, id)
		}
	}
	// Never asked for (zero) goes first; ties by ID, so that the choice
	// does not depend on map order.
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(c.access[a], c.access[b]), cmp.Compare(a, b))
	})
	dropped := 0
	for _, id := range ids {
		if dropped == extra {
			break
		}
		delete(c.svids, id)
		dropped++
	}
	n := len(c.svids)
	c.mu.Unlock()
	c.metrics.SetGauge([]string{"lru_cache_svid_map_size"}, float32(n))
	return dropped
}
