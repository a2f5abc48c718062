package manager

import (
	"container/list"
	"strings"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// DefaultSVIDCacheMaxSize is SPIRE's default for x509_svid_cache_max_size
// and jwt_svid_cache_max_size.
const DefaultSVIDCacheMaxSize = 1000

// jwtCache holds JWT-SVIDs by jwtKey, at most max of them: adding one more
// drops the least recently used, as SPIRE's JWT-SVID cache does, so that
// workloads asking for ever new audiences cannot grow the agent.
type jwtCache struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of *jwtItem
	order *list.List               // most recently used first
}

type jwtItem struct {
	key  string
	svid *cache.JWTSVID
}

func newJWTCache(max int) *jwtCache {
	if max <= 0 {
		max = DefaultSVIDCacheMaxSize
	}
	return &jwtCache{max: max, byKey: map[string]*list.Element{}, order: list.New()}
}

func (c *jwtCache) get(key string) (*cache.JWTSVID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*jwtItem).svid, true
}

// put stores svid under key and drops the tokens that expired by now, then
// the least recently used beyond the limit.
func (c *jwtCache) put(key string, svid *cache.JWTSVID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		el.Value.(*jwtItem).svid = svid
		c.order.MoveToFront(el)
	} else {
		c.byKey[key] = c.order.PushFront(&jwtItem{key: key, svid: svid})
	}
	for el := c.order.Back(); el != nil; {
		prev := el.Prev()
		if it := el.Value.(*jwtItem); !now.Before(it.svid.ExpiresAt) {
			c.removeLocked(el)
		}
		el = prev
	}
	for c.order.Len() > c.max {
		c.removeLocked(c.order.Back())
	}
}

// keep drops the tokens whose SPIFFE ID (the key's first part) live does
// not hold.
func (c *jwtCache) keep(live map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, el := range c.byKey {
		if id, _, _ := strings.Cut(key, "\x00"); !live[id] {
			c.removeLocked(el)
		}
	}
}

// drop removes the tokens bad says to and counts them.
func (c *jwtCache) drop(bad func(*cache.JWTSVID) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, el := range c.byKey {
		if bad(el.Value.(*jwtItem).svid) {
			c.removeLocked(el)
			n++
		}
	}
	return n
}

func (c *jwtCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *jwtCache) removeLocked(el *list.Element) {
	delete(c.byKey, el.Value.(*jwtItem).key)
	c.order.Remove(el)
}
