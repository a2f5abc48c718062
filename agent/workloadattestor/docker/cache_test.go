package docker

import (
	"testing"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// fill runs one flight for id to completion and reports whether it was
// cached.
func fill(c *cache, id string, running bool) bool {
	_, hit, f, start := c.get(id)
	if hit || !start {
		panic("fill: " + id + " already cached or in flight")
	}
	c.finish(id, f, answer{sel: []*types.Selector{{Type: SelectorType, Value: "label:id:" + id}}}, nil, running)
	return c.has(id)
}

func TestCacheBound(t *testing.T) {
	c := newCache(2)
	c.setLive(true)
	fill(c, "a", true)
	fill(c, "b", true)
	c.get("a") // a is now the most recently used
	fill(c, "c", true)
	if !c.has("a") || c.has("b") || !c.has("c") {
		t.Fatalf("after a, b, use of a, c with room for 2: a %v b %v c %v; want the least recently used (b) gone", c.has("a"), c.has("b"), c.has("c"))
	}
}

// Nothing is cached that could be stale: a stopped container, an answer
// that raced with the container's die event or with the loss of the event
// subscription, or anything while not subscribed.
func TestCacheNeverStale(t *testing.T) {
	c := newCache(8)
	if fill(c, "x", true) {
		t.Fatal("cached while not subscribed")
	}
	c.setLive(true)
	if fill(c, "stopped", false) {
		t.Fatal("a stopped container was cached")
	}

	_, _, f, _ := c.get("dies")
	c.evict("dies") // the die event arrives while the inspect is in flight
	c.finish("dies", f, answer{}, nil, true)
	if c.has("dies") {
		t.Fatal("an inspect that raced with the container's die event was cached")
	}

	_, _, f, _ = c.get("lost")
	c.setLive(false)
	c.setLive(true)
	c.finish("lost", f, answer{}, nil, true)
	if c.has("lost") {
		t.Fatal("an inspect that raced with a lost subscription was cached")
	}

	fill(c, "kept", true)
	c.setLive(false)
	if c.has("kept") {
		t.Fatal("entries survived the loss of the subscription")
	}

	c.setLive(true)
	fill(c, "evicted", true)
	c.evict("evicted")
	if c.has("evicted") {
		t.Fatal("evict left the entry")
	}
}

func TestCacheOff(t *testing.T) {
	c := newCache(0)
	c.setLive(true)
	if fill(c, "a", true) {
		t.Fatal("cached with size 0")
	}
}
