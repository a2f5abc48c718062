package events

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

func TestMain(m *testing.M) { os.Exit(postgres.Main(m)) }

var ctx = context.Background()

// recorder is a Sink that records what it is told; fail makes its next
// apply fail.
type recorder struct {
	mu      sync.Mutex
	reloads int
	entries []string
	nodes   []string
	polled  int
	fail    bool
	// onReload runs inside Reload, before the caches would be read.
	onReload func()
}

func (r *recorder) Reload(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads++
	if r.onReload != nil {
		r.onReload()
		r.onReload = nil
	}
	return nil
}

func (r *recorder) EntriesChanged(_ context.Context, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		r.fail = false
		return errors.New("apply failed")
	}
	r.entries = append(r.entries, ids...)
	return nil
}

func (r *recorder) NodesChanged(_ context.Context, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes = append(r.nodes, ids...)
	return nil
}

func (r *recorder) Polled(context.Context) {
	r.mu.Lock()
	r.polled++
	r.mu.Unlock()
}

// take returns and clears the recorded entry and node keys.
func (r *recorder) take() (entries, nodes []string, reloads int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, nodes, reloads = r.entries, r.nodes, r.reloads
	r.entries, r.nodes = nil, nil
	return entries, nodes, reloads
}

func entry(path string) *types.Entry {
	return &types.Entry{SpiffeId: &types.SPIFFEID{TrustDomain: "td", Path: path},
		ParentId: &types.SPIFFEID{TrustDomain: "td", Path: "/p"}, Selectors: []*types.Selector{{Type: "a", Value: path}}}
}

func sync1(t *testing.T, p *Poller) {
	t.Helper()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func wantTook(t *testing.T, r *recorder, entries, nodes []string, reloads int) {
	t.Helper()
	e, n, rl := r.take()
	if !slices.Equal(e, entries) || !slices.Equal(n, nodes) || rl != reloads {
		t.Fatalf("sink got entries %q, nodes %q, %d reloads; want %q, %q, %d", e, n, rl, entries, nodes, reloads)
	}
}

// TestPollerApplies: the first sync is a full reload; later ones hand the
// sink exactly the entries and nodes written since, once each.
func TestPollerApplies(t *testing.T) {
	ds := sqlitetest.Open(t)
	old, err := ds.CreateEntry(ctx, entry("/old"))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wantTook(t, r, nil, nil, 1)
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)

	e, err := ds.CreateEntry(ctx, entry("/new"))
	if err != nil {
		t.Fatal(err)
	}
	e.Hint = "h"
	if _, err := ds.UpdateEntry(ctx, e, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.DeleteEntry(ctx, old.Id); err != nil {
		t.Fatal(err)
	}
	const node = "spiffe://td/spire/agent/x/1"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: node, AttestationType: "x", CertSerial: "1"}); err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{e.Id, old.Id}, []string{node}, 1)
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)
	if s := p.Stats(); s.Applied != 4 || s.Reloads != 1 || s.Polls != 4 {
		t.Fatalf("stats %+v, want 4 applied, 1 reload, 4 polls", s)
	}
}

// TestPollerFailedApply: when the sink fails to apply events (the database
// away, a caller's context ended), the sync fails and the next one applies
// the same events again, without a full reload.
func TestPollerFailedApply(t *testing.T) {
	ds := sqlitetest.Open(t)
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r})
	sync1(t, p)
	e, err := ds.CreateEntry(ctx, entry("/a"))
	if err != nil {
		t.Fatal(err)
	}
	r.fail = true
	if err := p.Sync(ctx); err == nil {
		t.Fatal("Sync succeeded although the apply failed")
	}
	wantTook(t, r, nil, nil, 1)
	sync1(t, p)
	wantTook(t, r, []string{e.Id}, nil, 1)
}

// postgresStore opens a store on a new PostgreSQL database, and the same
// database directly, for transactions that hold an event ID without
// committing (holdEvent).
func postgresStore(t *testing.T) (*sqlstore.Store, *sql.DB) {
	t.Helper()
	return openWithRaw(t, sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: postgres.Start(t)})
}

// openWithRaw opens a store with cfg, and cfg's PostgreSQL database
// directly (as postgresStore).
func openWithRaw(t *testing.T, cfg sqlstore.Config) (*sqlstore.Store, *sql.DB) {
	t.Helper()
	ds, err := sqlstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	pc, err := pgx.ParseConfig(cfg.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	raw := stdlib.OpenDB(*pc)
	t.Cleanup(func() { raw.Close() })
	return ds, raw
}

// holdEvent opens a transaction on raw that takes the next entry event ID
// for key and leaves it open; it is rolled back when the test ends unless
// the test ends it first.
func holdEvent(t *testing.T, raw *sql.DB, key string, at time.Time) *sql.Tx {
	t.Helper()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `INSERT INTO registered_entries_events (created_at, entry_id) VALUES ($1, $2)`, at.Unix(), key); err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestPollerGap: a transaction that took an event ID and commits after a
// later one is applied when it commits (SPIRE's skipped events); one that
// never commits stops being looked for after the event timeout. Real
// concurrent transactions on PostgreSQL.
func TestPollerGap(t *testing.T) {
	ds, raw := postgresStore(t)
	clk := testclock.New(time.Unix(1_800_000_000, 0))
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r, Clock: clk.Now, EventTimeout: time.Minute})
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)

	// Two writers take IDs N and N+1; N+1 commits first.
	slow := holdEvent(t, raw, "slow", clk.Now())
	fast, err := ds.CreateEntry(ctx, entry("/fast"))
	if err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{fast.Id}, nil, 1)
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{"slow"}, nil, 1)
	if s := p.Stats(); s.GapsFilled != 1 {
		t.Fatalf("stats %+v, want 1 gap filled", s)
	}

	// A writer that rolls back leaves a gap for good: looked for until the
	// event timeout, then no more (and no reload).
	lost := holdEvent(t, raw, "lost", clk.Now())
	after, err := ds.CreateEntry(ctx, entry("/after"))
	if err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{after.Id}, nil, 1)
	if err := lost.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n := len(p.trackers[0].missing); n != 1 {
		t.Fatalf("%d IDs tracked as missing, want 1", n)
	}
	clk.Add(2 * time.Minute)
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)
	if n := len(p.trackers[0].missing); n != 0 {
		t.Fatalf("%d IDs still tracked after the event timeout, want 0", n)
	}
}

// TestPollerGapAtStart: a transaction still open when the server loads
// its caches (its ID below the last one then) is applied when it commits.
func TestPollerGapAtStart(t *testing.T) {
	ds, raw := postgresStore(t)
	if _, err := ds.CreateEntry(ctx, entry("/first")); err != nil {
		t.Fatal(err)
	}
	slow := holdEvent(t, raw, "slow", time.Now())
	if _, err := ds.CreateEntry(ctx, entry("/second")); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r})
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{"slow"}, nil, 1)
}

// TestPollerCommitDuringReload: a transaction holding the first event ID
// of all (below every event visible at the reload) that commits while the
// caches are being read is applied at the next sync. Listing the recent
// events after the caches were read took it for seen, and tracking only
// the gaps after the first visible event never looked for it.
func TestPollerCommitDuringReload(t *testing.T) {
	ds, raw := postgresStore(t)
	slow := holdEvent(t, raw, "slow", time.Now())
	if _, err := ds.CreateEntry(ctx, entry("/second")); err != nil {
		t.Fatal(err)
	}
	r := &recorder{onReload: func() {
		if err := slow.Commit(); err != nil {
			t.Error(err)
		}
	}}
	p := New(Config{DataStore: ds, Sink: r})
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)
	sync1(t, p)
	wantTook(t, r, []string{"slow"}, nil, 1)
}

// TestPollerGapCommittedPastTimeout: a missing ID whose transaction
// commits after the event timeout passed without a poll (the database away
// meanwhile) is still applied at the next poll: expired IDs are looked for
// once more before they are dropped.
func TestPollerGapCommittedPastTimeout(t *testing.T) {
	ds, raw := postgresStore(t)
	clk := testclock.New(time.Unix(1_800_000_000, 0))
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r, Clock: clk.Now, EventTimeout: time.Minute})
	sync1(t, p)
	slow := holdEvent(t, raw, "slow", clk.Now())
	fast, err := ds.CreateEntry(ctx, entry("/fast"))
	if err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{fast.Id}, nil, 1)
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	sync1(t, p)
	wantTook(t, r, []string{"slow"}, nil, 1)
}

// TestPollerTooManyMissing: IDs missing past what can be tracked (events
// lost or pruned meanwhile) make the caches reload.
func TestPollerTooManyMissing(t *testing.T) {
	ds, raw := postgresStore(t)
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r})
	sync1(t, p)
	if _, err := raw.ExecContext(ctx, `SELECT setval('registered_entries_events_id_seq', $1)`, maxTracked+10); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.CreateEntry(ctx, entry("/far")); err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, nil, nil, 2)
}

// TestPollerLongOutage: a server that could not read the events for half
// of prune_events_older_than reloads, since events it never read may have
// been pruned by the others meanwhile.
func TestPollerLongOutage(t *testing.T) {
	ds := sqlitetest.Open(t)
	clk := testclock.New(time.Unix(1_800_000_000, 0))
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r, Clock: clk.Now, PruneOlderThan: 12 * time.Hour})
	sync1(t, p)
	clk.Add(5 * time.Hour)
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)
	clk.Add(7 * time.Hour)
	sync1(t, p)
	wantTook(t, r, nil, nil, 2)
}
