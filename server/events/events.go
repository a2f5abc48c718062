// Package events keeps a server's caches in step with a database that other
// servers write too, as SPIRE's events-based cache does: every entry or node
// write appends an event (the entry ID or node SPIFFE ID) in its own
// transaction, and each server reads, every cache_reload_interval, the
// events after the last one it saw and has its caches read again just what
// they name. A full reload happens only at start and when the events cannot
// be trusted to name every change (more IDs are missing than can be
// tracked, or the events could not be read for so long that some may have
// been pruned unread).
//
// Event IDs are allotted when a transaction writes its event, not when it
// commits, so an ID can become visible after a greater one has. Such a gap
// is remembered and looked for again at every poll for EventTimeout
// (SPIRE's 15 minutes), after which it is taken for a transaction that
// rolled back. IDs below the last one seen at a full reload are looked at in
// the same way for a while after it.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Defaults. SPIRE's events-based cache polls every cache_reload_interval
// (5 s by default); ours is a quarter of a second, so that a change made
// through another server is in force here well within a second, for two
// indexed queries per interval.
const (
	DefaultInterval       = 250 * time.Millisecond
	DefaultPruneOlderThan = 12 * time.Hour // SPIRE's prune_events_older_than
	DefaultEventTimeout   = 15 * time.Minute
	// pruneEvery is how often each server prunes; the DELETE is
	// idempotent, so servers sharing a database need not agree on who.
	pruneEvery = 10 * time.Minute
	// pageSize bounds one read of new events.
	pageSize = 5000
	// maxTracked bounds the missing IDs tracked per table; past it the
	// caches are reloaded instead (a gap that size is no transaction
	// still running, but pruned or lost events).
	maxTracked = 10000
	// DefaultMaxReplicaLag bounds how long the loop trusts the replica
	// alone (ro_connection_string): one poll in that time reads the
	// primary, so that a replica whose replay stopped while it still
	// answers delays other servers' changes by that much, not for ever.
	DefaultMaxReplicaLag = 10 * time.Second
	// lookback is how many IDs below the last one seen at a full reload
	// are checked for gaps: transactions that were still open then. It
	// covers the largest batch of entries (api.MaxBatch) written in one.
	lookback = 1000
)

// Sink is what the poller keeps up to date (the server API's caches).
type Sink interface {
	// Reload reads every cache again from the database.
	Reload(ctx context.Context) error
	// EntriesChanged reads again the entries with these IDs (an absent
	// one was deleted).
	EntriesChanged(ctx context.Context, ids []string) error
	// NodesChanged forgets what is cached of these nodes.
	NodesChanged(ctx context.Context, ids []string) error
	// Polled is called after every successful poll, for caches that
	// check for changes without events (the bundle).
	Polled(ctx context.Context)
}

// Config configures a Poller.
type Config struct {
	DataStore datastore.DataStore
	Sink      Sink
	// Interval is cache_reload_interval; DefaultInterval when 0.
	Interval time.Duration
	// PruneOlderThan is prune_events_older_than; DefaultPruneOlderThan
	// when 0.
	PruneOlderThan time.Duration
	// EventTimeout is how long a missing ID is looked for;
	// DefaultEventTimeout when 0.
	EventTimeout time.Duration
	// MaxReplicaLag is how long the loop may go without a poll of the
	// primary; DefaultMaxReplicaLag when 0.
	MaxReplicaLag time.Duration
	Clock         func() time.Time
	Log           *slog.Logger
	// Metrics gets SPIRE's gauges of the event IDs being looked for
	// (entry.skipped_entry_event_ids.count,
	// node.skipped_node_event_ids.count); nil drops them.
	Metrics *telemetry.Metrics
}

// Stats are counts since the poller started.
type Stats struct {
	// Polls is the number of completed polls.
	Polls uint64
	// Applied is the number of events applied (each a key the caches
	// read again).
	Applied uint64
	// Reloads is the number of full reloads, the first included.
	Reloads uint64
	// GapsFilled is the number of missing IDs found later.
	GapsFilled uint64
}

// Poller reads the events and applies them to its sink.
type Poller struct {
	cfg Config

	// mu serializes polls: the background loop and callers that need a
	// change of their own server applied before they go on (Sync).
	mu       sync.Mutex
	trackers [2]*tracker
	// reload asks the next poll for a full reload.
	reload bool
	// lastOK is when a sync last succeeded: a server that could not read
	// the events for half of prune_events_older_than may have missed
	// some that were pruned meanwhile, and reloads.
	lastOK time.Time
	// lastCurrent is when a sync that read the primary last succeeded.
	lastCurrent time.Time

	kick  chan struct{}
	stats struct{ polls, applied, reloads, gaps atomic.Uint64 }
}

// tracker follows one event table.
type tracker struct {
	kind datastore.EventKind
	// last is the greatest event ID seen.
	last int64
	// missing are the IDs below last not seen yet, with when they were
	// first missed.
	missing map[int64]time.Time
}

// New returns a poller; call Start, then Run.
func New(cfg Config) *Poller {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.PruneOlderThan <= 0 {
		cfg.PruneOlderThan = DefaultPruneOlderThan
	}
	if cfg.EventTimeout <= 0 {
		cfg.EventTimeout = DefaultEventTimeout
	}
	if cfg.MaxReplicaLag <= 0 {
		cfg.MaxReplicaLag = DefaultMaxReplicaLag
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Poller{cfg: cfg, reload: true, kick: make(chan struct{}, 1)}
	for i, k := range []datastore.EventKind{datastore.EntryEvents, datastore.NodeEvents} {
		p.trackers[i] = &tracker{kind: k, missing: map[int64]time.Time{}}
	}
	return p
}

// Interval is the poll interval in use.
func (p *Poller) Interval() time.Duration { return p.cfg.Interval }

// Stats returns the counts so far.
func (p *Poller) Stats() Stats {
	return Stats{Polls: p.stats.polls.Load(), Applied: p.stats.applied.Load(),
		Reloads: p.stats.reloads.Load(), GapsFilled: p.stats.gaps.Load()}
}

// Start makes the first, full load; the caches are complete when it
// returns nil.
func (p *Poller) Start(ctx context.Context) error { return p.Sync(ctx) }

// Kick asks the loop to poll now rather than at the next interval.
func (p *Poller) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run polls every interval, and prunes old events now and then, until ctx
// ends. A failed poll is logged and retried at the next interval; the
// caches keep serving what they hold meanwhile.
func (p *Poller) Run(ctx context.Context) error {
	p.cfg.Log.Info("Following entry and node events", "cache_reload_interval", p.cfg.Interval,
		"prune_events_older_than", p.cfg.PruneOlderThan)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	// The first prune comes at a random point of the period, so that
	// servers started together do not prune together.
	prune := time.NewTimer(time.Duration(rand.Int64N(int64(pruneEvery))))
	defer prune.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.kick:
		case <-prune.C:
			prune.Reset(pruneEvery)
			n, err := p.cfg.DataStore.PruneEvents(ctx, p.cfg.Clock().Add(-p.cfg.PruneOlderThan))
			if err != nil && ctx.Err() == nil {
				p.cfg.Log.Warn("Failed to prune events", "error", err)
			} else if n > 0 {
				p.cfg.Log.Debug("Pruned events", "count", n)
			}
			continue
		}
		err := p.sync(ctx, p.loopConsistency())
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			p.cfg.Log.Warn("Failed to read entry and node events; serving the cached entries and nodes meanwhile", "error", err)
			failing = true
		case err == nil && failing:
			p.cfg.Log.Info("Reading entry and node events again")
			failing = false
		}
	}
}

// loopConsistency is what the loop's next poll reads: the replica, unless
// no poll has read the primary for MaxReplicaLag.
func (p *Poller) loopConsistency() datastore.DataConsistency {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Clock().Sub(p.lastCurrent) >= p.cfg.MaxReplicaLag {
		return datastore.RequireCurrent
	}
	return datastore.TolerateStale
}

// Sync polls once, reading the primary database: when it returns nil,
// every change committed before it was called is in the caches.
func (p *Poller) Sync(ctx context.Context) error { return p.sync(ctx, datastore.RequireCurrent) }

// sync polls once. The loop's polls read the events with TolerateStale,
// from the read-only replica when there is one (ro_connection_string), as
// SPIRE's events-based cache does: a lagging replica only delays a change
// made through another server, since the rows the events name are read
// from the primary. Sync, which a write through this server waits on,
// must see that write, and reads the primary. The trackers can take both:
// a replica shows a prefix of the primary's commits, so after a current
// poll a stale one finds nothing new until the replica has caught up, and
// an ID missing on the replica is looked for again like any gap. A full
// reload always reads the primary, and so does one of the loop's polls
// every MaxReplicaLag.
func (p *Poller) sync(ctx context.Context, c datastore.DataConsistency) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Clock()
	if !p.lastOK.IsZero() && now.Sub(p.lastOK) > p.cfg.PruneOlderThan/2 {
		p.reload = true
	}
	// current is whether what the caches now hold was read from the
	// primary: a current poll, or a full reload (always the primary).
	current := c == datastore.RequireCurrent
	if p.reload {
		if err := p.fullReload(ctx); err != nil {
			return err
		}
		p.reload, current = false, true
	} else if err := p.poll(ctx, c); err != nil {
		var inc inconsistency
		if !errors.As(err, &inc) {
			return err
		}
		p.cfg.Log.Warn("Reloading the entry and node caches", "reason", err)
		if err := p.fullReload(ctx); err != nil {
			p.reload = true
			return err
		}
		current = true
	}
	p.lastOK = now
	if current {
		p.lastCurrent = now
	}
	p.stats.polls.Add(1)
	p.cfg.Metrics.SetGauge([]string{"entry", "skipped_entry_event_ids", "count"}, float32(len(p.trackers[0].missing)))
	p.cfg.Metrics.SetGauge([]string{"node", "skipped_node_event_ids", "count"}, float32(len(p.trackers[1].missing)))
	p.cfg.Sink.Polled(ctx)
	return nil
}

// inconsistency is a poll's finding that the events cannot name every
// change; a full reload follows.
type inconsistency struct{ reason string }

func (e inconsistency) Error() string { return e.reason }

// fullReload reads the last event IDs and the events just below them,
// then every cache. The IDs absent from that window are tracked: their
// transactions may still be open, and commit before or after the caches
// are read (a change applied twice is harmless). The window is read before
// the caches, not after: an ID that committed in between would have looked
// seen, and its change would have been lost until the next full reload.
func (p *Poller) fullReload(ctx context.Context) error {
	now := p.cfg.Clock()
	lasts := make([]int64, len(p.trackers))
	missing := make([]map[int64]time.Time, len(p.trackers))
	for i, tr := range p.trackers {
		last, err := p.cfg.DataStore.LastEventID(ctx, tr.kind)
		if err != nil {
			return err
		}
		from := max(0, last-lookback)
		evs, err := p.cfg.DataStore.ListEvents(ctx, tr.kind, from, 0, datastore.RequireCurrent)
		if err != nil {
			return fmt.Errorf("read the recent events: %w", err)
		}
		seen := make(map[int64]bool, len(evs))
		for _, ev := range evs {
			seen[ev.ID] = true
		}
		missing[i] = map[int64]time.Time{}
		for id := from + 1; id <= last; id++ {
			if !seen[id] {
				missing[i][id] = now
			}
		}
		lasts[i] = last
	}
	if err := p.cfg.Sink.Reload(ctx); err != nil {
		return fmt.Errorf("reload the caches: %w", err)
	}
	p.stats.reloads.Add(1)
	for i, tr := range p.trackers {
		tr.last, tr.missing = lasts[i], missing[i]
	}
	return nil
}

// poll applies the events after the last seen and the missing ones that
// showed up, read with consistency c.
func (p *Poller) poll(ctx context.Context, c datastore.DataConsistency) error {
	now := p.cfg.Clock()
	keys := make([][]string, len(p.trackers))
	type pending struct {
		last    int64
		missing map[int64]time.Time
		gaps    int
	}
	next := make([]pending, len(p.trackers))
	for i, tr := range p.trackers {
		// Work on copies, committed once the sink has the changes: a
		// failed apply leaves the trackers where they were.
		// Expired IDs are looked for a last time before they are
		// dropped, so that an outage longer than EventTimeout does not
		// drop unread a change that committed during it.
		missing := make(map[int64]time.Time, len(tr.missing))
		for id, at := range tr.missing {
			missing[id] = at
		}
		var gaps int
		if len(missing) > 0 {
			ids := make([]int64, 0, len(missing))
			fc := c
			for id, at := range missing {
				ids = append(ids, id)
				// The last look before an ID is dropped reads the
				// primary: a lagging replica must not be why a
				// change that committed is never applied.
				if now.Sub(at) >= p.cfg.EventTimeout {
					fc = datastore.RequireCurrent
				}
			}
			found, err := p.cfg.DataStore.FetchEvents(ctx, tr.kind, ids, fc)
			if err != nil {
				return err
			}
			for _, ev := range found {
				delete(missing, ev.ID)
				keys[i] = append(keys[i], ev.Key)
				gaps++
			}
			for id, at := range missing {
				if now.Sub(at) >= p.cfg.EventTimeout {
					delete(missing, id)
				}
			}
		}
		last := tr.last
		for {
			evs, err := p.cfg.DataStore.ListEvents(ctx, tr.kind, last, pageSize, c)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if ev.ID-last-1 > maxTracked-int64(len(missing)) {
					return inconsistency{fmt.Sprintf("%v: %d event IDs missing after %d", tr.kind, ev.ID-last-1, last)}
				}
				for id := last + 1; id < ev.ID; id++ {
					missing[id] = now
				}
				last = ev.ID
				keys[i] = append(keys[i], ev.Key)
			}
			if len(evs) < pageSize {
				break
			}
		}
		next[i] = pending{last: last, missing: missing, gaps: gaps}
	}
	// A failed apply (the database away, the caller's context ended) is
	// retried at the next poll: the trackers stay, and applying a change
	// again is harmless.
	if err := p.apply(ctx, keys); err != nil {
		return fmt.Errorf("apply events: %w", err)
	}
	for i, tr := range p.trackers {
		tr.last, tr.missing = next[i].last, next[i].missing
		p.stats.gaps.Add(uint64(next[i].gaps))
	}
	return nil
}

func (p *Poller) apply(ctx context.Context, keys [][]string) error {
	for i, tr := range p.trackers {
		ks := dedup(keys[i])
		if len(ks) == 0 {
			continue
		}
		var err error
		if tr.kind == datastore.EntryEvents {
			err = p.cfg.Sink.EntriesChanged(ctx, ks)
		} else {
			err = p.cfg.Sink.NodesChanged(ctx, ks)
		}
		if err != nil {
			return err
		}
		p.stats.applied.Add(uint64(len(keys[i])))
	}
	return nil
}

func dedup(keys []string) []string {
	if len(keys) < 2 {
		return keys
	}
	seen := make(map[string]struct{}, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			out = append(out, k)
		}
	}
	return out
}
