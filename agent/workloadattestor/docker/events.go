package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Reconnection backoff of the event watcher.
const (
	watchMinBackoff = 100 * time.Millisecond
	watchMaxBackoff = 5 * time.Second
)

// watch keeps a subscription to the engine's container die and destroy
// events and evicts the containers they name, until Close. The cache is
// used only while subscribed.
func (a *Attestor) watch() {
	defer close(a.done)
	backoff := watchMinBackoff
	warned := false
	for {
		began := time.Now()
		err := a.watchOnce()
		a.cache.setLive(false)
		if a.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 2*watchMaxBackoff {
			// It had worked for a while: retry at once, and say so again
			// if this outage lasts. An engine that answers and then drops
			// every subscription keeps backing off instead.
			backoff, warned = watchMinBackoff, false
		}
		if !warned {
			a.log.Warn("Docker event subscription lost; inspect results are not cached until it is back", "host", a.host, "error", err)
			warned = true
		}
		t := time.NewTimer(backoff)
		select {
		case <-a.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, watchMaxBackoff)
	}
}

// watchOnce subscribes once and handles events until the subscription
// ends, and says why it ended.
func (a *Attestor) watchOnce() error {
	nctx, ncancel := context.WithTimeout(a.ctx, a.timeout)
	cl, err := a.engine.client(nctx)
	ncancel()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	// The engine subscribes a moment after it answers; asking for events
	// since just before the request closes that gap (the engine replays
	// them from its buffer).
	since := time.Now().Add(-time.Second)
	msgs, errs := cl.Events(ctx, events.ListOptions{
		Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionDestroy)),
		),
	})
	select {
	case err := <-errs:
		return fmt.Errorf("subscribe to events: %w", err)
	default:
	}
	a.cache.setLive(true)
	a.log.Debug("Subscribed to docker container events", "host", a.host)
	for {
		select {
		case m := <-msgs:
			if m.Type == events.ContainerEventType && m.Actor.ID != "" {
				a.cache.evict(m.Actor.ID)
			}
		case err := <-errs:
			return fmt.Errorf("event stream: %w", err)
		}
	}
}
