package k8s

import (
	"context"
	"time"
)

// cacheFor is how long a fetched pod list answers attestations: half the
// retry interval, as in SPIRE, so label changes show within that time. A
// container missing from a cached list triggers a fresh fetch anyway.
func (a *Attestor) cacheFor() time.Duration { return a.cfg.PollRetryInterval / 2 }

// podIndex returns a pod list fetched no earlier than notBefore: the cached
// one while it is fresh, else the result of a fetch, shared with every
// other caller waiting for one. The fetch runs on its own bounded context,
// so a caller that gives up returns at once without failing the others.
func (a *Attestor) podIndex(ctx context.Context, notBefore time.Time) (*podIndex, error) {
	a.mu.Lock()
	now := a.now()
	if idx := a.idx; idx != nil && !idx.fetched.Before(notBefore) && now.Sub(idx.fetched) < a.cacheFor() {
		a.mu.Unlock()
		return idx, nil
	}
	f := a.flight
	if f == nil || f.started.Before(notBefore) {
		f = a.startFetchLocked(now)
	}
	a.mu.Unlock()
	select {
	case <-f.done:
		return f.idx, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startFetchLocked starts a /pods request; a.mu must be held.
func (a *Attestor) startFetchLocked(now time.Time) *fetch {
	f := &fetch{started: now, done: make(chan struct{})}
	a.flight = f
	client := a.clientLocked(now)
	go func() {
		defer close(f.done)
		ctx, cancel := context.WithTimeout(a.base, a.requestTimeout)
		defer cancel()
		b, err := client.getPods(ctx)
		if err == nil {
			f.idx, err = parsePodList(b, now, func(name string, err error) {
				a.log.Warn("k8s: skipping pod in kubelet list", "pod", name, "error", err)
			})
		}
		f.err = err
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.flight == f {
			a.flight = nil
		}
		if err == nil && (a.idx == nil || a.idx.fetched.Before(now)) {
			a.idx = f.idx
		}
	}()
	return f
}

// clientLocked returns the kubelet client, first re-reading the CA, token
// and client certificate when ReloadInterval has passed, as SPIRE does. A
// reload that fails keeps the previous credentials and logs why; one that
// reads the same bytes keeps the previous client and its connections.
func (a *Attestor) clientLocked(now time.Time) *kubeletClient {
	if !a.cfg.secure() || now.Sub(a.lastReload) < a.cfg.ReloadInterval {
		return a.client
	}
	a.lastReload = now
	c, err := newKubeletClient(&a.cfg)
	if err != nil {
		a.log.Warn("Unable to load kubelet client", "error", err)
		return a.client
	}
	if c.material == a.client.material && c.url == a.client.url {
		return a.client
	}
	a.client.close()
	a.client = c
	return c
}
