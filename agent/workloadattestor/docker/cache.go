package docker

import (
	"container/list"
	"sync"
)

// cache holds selector values per container ID, least recently used
// evicted first. An entry is only ever added while the attestor is
// subscribed to the engine's die and destroy events, for a container the
// engine said was running, and only if no such event for it (and no loss of
// the subscription) came while it was being inspected: so every entry is of
// a container that has not stopped, as far as the engine has told us.
type cache struct {
	mu      sync.Mutex
	max     int
	lru     *list.List // of *entry, most recent first
	entries map[string]*list.Element
	flights map[string]*flight
	// live: the event subscription is established, so a die event for a
	// cached container will reach evict.
	live bool
	// onEvict, set by tests before use, hears of every eviction by event.
	onEvict func(id string)
}

type entry struct {
	id   string
	vals []string
}

// flight is one inspect in progress, shared by the callers that wait on it.
type flight struct {
	done chan struct{}
	vals []string
	err  error
	// cacheable stays true only while nothing happened that could make
	// the answer stale: subscribed when it started, and no die, destroy or
	// loss of subscription since.
	cacheable bool
}

func newCache(max int) *cache {
	return &cache{max: max, lru: list.New(), entries: map[string]*list.Element{}, flights: map[string]*flight{}}
}

// get returns the cached values of id (hit), or the flight to wait on;
// start says the caller created it and must run it.
func (c *cache) get(id string) (vals []string, hit bool, f *flight, start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*entry).vals, true, nil, false
	}
	if f, ok := c.flights[id]; ok {
		return nil, false, f, false
	}
	f = &flight{done: make(chan struct{}), cacheable: c.live}
	c.flights[id] = f
	return nil, false, f, true
}

// finish publishes a flight's answer and caches it if it may be.
func (c *cache) finish(id string, f *flight, vals []string, err error, running bool) {
	c.mu.Lock()
	delete(c.flights, id)
	f.vals, f.err = vals, err
	if err == nil && running && f.cacheable && c.live {
		c.entries[id] = c.lru.PushFront(&entry{id: id, vals: vals})
		for c.lru.Len() > c.max {
			old := c.lru.Remove(c.lru.Back()).(*entry)
			delete(c.entries, old.id)
		}
	}
	c.mu.Unlock()
	close(f.done)
}

// evict forgets container id (it died or was destroyed), and keeps an
// inspect of it in progress from being cached.
func (c *cache) evict(id string) {
	c.mu.Lock()
	if el, ok := c.entries[id]; ok {
		c.lru.Remove(el)
		delete(c.entries, id)
	}
	if f, ok := c.flights[id]; ok {
		f.cacheable = false
	}
	hook := c.onEvict
	c.mu.Unlock()
	if hook != nil {
		hook(id)
	}
}

// setLive records whether the event subscription is established. Losing it
// empties the cache: events may be missed until it is back.
func (c *cache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = live
	if live {
		return
	}
	c.lru.Init()
	clear(c.entries)
	for _, f := range c.flights {
		f.cacheable = false
	}
}

// has reports whether id is cached (for tests).
func (c *cache) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[id]
	return ok
}
