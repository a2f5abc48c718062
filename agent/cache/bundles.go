package cache

import (
	"context"
	"crypto/sha256"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundles are the trust bundles the agent holds, by trust domain: its own
// and every federated one.
type Bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle

// BundleSubscription delivers the agent's Bundles: the current set at once,
// then a new set whenever a bundle is added, changed or removed. Like
// Subscription, a slow reader only ever sees the latest set.
type BundleSubscription interface {
	Updates() <-chan Bundles
	// Finish releases the subscription; it is safe to call more than once.
	Finish()
}

// SubscribeToBundles returns a subscription to every bundle the agent
// holds, not one workload's view of them: the Delegated Identity API's
// bundle streams serve a delegate that acts for many workloads. The
// subscription ends with Finish or when ctx is done.
func (c *Cache) SubscribeToBundles(ctx context.Context) BundleSubscription {
	s := &bundleSubscription{c: c, ch: make(chan Bundles, 1)}
	c.mu.Lock()
	if c.bundleSubs == nil {
		c.bundleSubs = map[*bundleSubscription]struct{}{}
	}
	c.bundleSubs[s] = struct{}{}
	b, sum := c.bundlesLocked()
	s.deliverLocked(b, sum, true)
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, s.Finish)
	c.mu.Lock()
	finished := s.finished
	s.stop = stop
	c.mu.Unlock()
	if finished {
		stop()
	}
	return s
}

// bundlesLocked returns a copy of every bundle and a digest of them, which
// tells whether a subscriber must hear of a change.
func (c *Cache) bundlesLocked() (Bundles, [32]byte) {
	out := make(Bundles, 1+len(c.federated))
	for td, b := range c.federated {
		out[td] = b
	}
	if c.bundle != nil {
		out[c.bundle.TrustDomain()] = c.bundle
	}
	tds := make([]spiffeid.TrustDomain, 0, len(out))
	for td := range out {
		tds = append(tds, td)
	}
	slices.SortFunc(tds, func(a, b spiffeid.TrustDomain) int { return compareString(a.Name(), b.Name()) })
	h := sha256.New()
	for _, td := range tds {
		writeString(h, td.Name())
		hashBundle(h, out[td])
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return out, sum
}

func (c *Cache) notifyBundlesLocked() {
	if len(c.bundleSubs) == 0 {
		return
	}
	b, sum := c.bundlesLocked()
	for s := range c.bundleSubs {
		s.deliverLocked(b, sum, false)
	}
}

type bundleSubscription struct {
	c    *Cache
	ch   chan Bundles
	last [32]byte
	// stop and finished are guarded by the cache lock.
	stop     func() bool
	finished bool

	once sync.Once
}

// deliverLocked replaces any unread set with b; the writer never blocks.
// Every subscriber gets the same map, which no one writes after this.
func (s *bundleSubscription) deliverLocked(b Bundles, sum [32]byte, first bool) {
	if !first && sum == s.last {
		return
	}
	s.last = sum
	select {
	case <-s.ch:
	default:
	}
	s.ch <- b
}

func (s *bundleSubscription) Updates() <-chan Bundles { return s.ch }

func (s *bundleSubscription) Finish() {
	s.once.Do(func() {
		s.c.mu.Lock()
		delete(s.c.bundleSubs, s)
		close(s.ch)
		s.finished = true
		stop := s.stop
		s.c.mu.Unlock()
		if stop != nil {
			stop()
		}
	})
}
