package docker

import (
	"container/list"
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// cache holds selectors per container ID, least recently used
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
	// liveCh is closed when live turns true, and replaced when it turns
	// false again.
	liveCh chan struct{}
	// onEvict, set by tests before use, hears of every eviction by event.
	onEvict func(id string)
}

type entry struct {
	id string
	answer
}

// answer is what an inspect taught of a container: its selectors, and the
// cgroups of its init process, against which a caller that claims to be in
// it is checked (containerinfo.Within).
type answer struct {
	sel     []*types.Selector
	cgroups []containerinfo.Cgroup
}

// flight is one inspect in progress, shared by the callers that wait on it.
type flight struct {
	done chan struct{}
	ans  answer
	err  error
	// cacheable stays true only while nothing happened that could make
	// the answer stale: subscribed when it started, and no die, destroy or
	// loss of subscription since.
	cacheable bool
}

func newCache(max int) *cache {
	return &cache{max: max, lru: list.New(), entries: map[string]*list.Element{}, flights: map[string]*flight{}, liveCh: make(chan struct{})}
}

// get returns the cached selectors of id (hit), or the flight to wait on;
// start says the caller created it and must run it.
func (c *cache) get(id string) (ans answer, hit bool, f *flight, start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*entry).answer, true, nil, false
	}
	if f, ok := c.flights[id]; ok {
		return answer{}, false, f, false
	}
	f = &flight{done: make(chan struct{}), cacheable: c.live}
	c.flights[id] = f
	return answer{}, false, f, true
}

// finish publishes a flight's answer and caches it if it may be.
func (c *cache) finish(id string, f *flight, ans answer, err error, running bool) {
	c.mu.Lock()
	delete(c.flights, id)
	f.ans, f.err = ans, err
	if err == nil && running && f.cacheable && c.live && c.max > 0 {
		c.entries[id] = c.lru.PushFront(&entry{id: id, answer: ans})
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
	if live == c.live {
		return
	}
	c.live = live
	if live {
		close(c.liveCh)
		return
	}
	c.liveCh = make(chan struct{})
	c.lru.Init()
	clear(c.entries)
	for _, f := range c.flights {
		f.cacheable = false
	}
}

// subscribed returns a channel closed while the subscription is live.
func (c *cache) subscribed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveCh
}

// has reports whether id is cached (for tests).
func (c *cache) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[id]
	return ok
}
