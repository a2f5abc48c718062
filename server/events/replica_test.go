package events

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/internal/testclock"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// waitEntries waits until the sink has been told of every one of ids and
// returns (and clears) every entry key it was told of meanwhile.
func waitEntries(t *testing.T, r *recorder, ids ...string) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, _, _ := r.take()
		got = append(got, e...)
		if !slices.ContainsFunc(ids, func(id string) bool { return !slices.Contains(got, id) }) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink told of entries %q in 10 s, want %q among them", got, ids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPollerReadsReplica, on a real PostgreSQL primary with a streaming
// replica as ro_connection_string: the loop reads the events from the
// replica (a change another server makes while the replica's replay is
// paused is not seen by its polls), and the primary once every
// MaxReplicaLag (so it is seen then, replay still paused); Sync reads the
// primary (a write through this server is seen at once); neither is
// applied again when the replica catches up; and with the replica down
// the loop reads the primary instead, saying so once.
func TestPollerReadsReplica(t *testing.T) {
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	inst := postgres.StartInstance(t)
	rep := inst.StartReplica(t)
	logs := &syncbuf.Buffer{}
	here, err := sqlstore.Open(tctx, sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: inst.DSN(),
		ROConnectionString: rep.DSN(), Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { here.Close() })
	// other is another server's store on the same database.
	other, err := sqlstore.Open(tctx, sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: inst.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	create := func(path string) string {
		t.Helper()
		e, err := other.CreateEntry(tctx, entry(path))
		if err != nil {
			t.Fatal(err)
		}
		return e.Id
	}

	r := &recorder{}
	const maxLag = 2 * time.Second
	p := New(Config{DataStore: here, Sink: r, Interval: 20 * time.Millisecond, MaxReplicaLag: maxLag})
	if err := p.Start(tctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(tctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = p.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()

	e1 := create("/1")
	// The replica has the schema and e1 once it has caught up; until
	// then its reads fail or miss e1, and the primary's answer is used.
	if err := rep.CatchUp(tctx); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, r, e1)

	if err := rep.PauseReplay(tctx); err != nil {
		t.Fatal(err)
	}
	// Sync reads the primary, so the loop's next look at it is maxLag
	// away.
	if err := p.Sync(tctx); err != nil {
		t.Fatal(err)
	}
	synced := time.Now()
	e2 := create("/2")
	// Some 25 polls of the paused replica; one of the primary would
	// have found e2.
	time.Sleep(500 * time.Millisecond)
	if got, _, _ := r.take(); len(got) != 0 {
		t.Fatalf("loop applied %q (e1 %s, e2 %s) while the replica's replay was paused: it did not read the replica; log:\n%s", got, e1, e2, logs.String())
	}
	// The replica still paused, the loop reads the primary once maxLag
	// has passed.
	waitEntries(t, r, e2)
	if took := time.Since(synced); took < maxLag {
		t.Fatalf("loop applied e2 %v after the last current poll, before MaxReplicaLag %v", took, maxLag)
	}
	e2b := create("/2b")
	if err := p.Sync(tctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := r.take(); !slices.Equal(got, []string{e2b}) {
		t.Fatalf("Sync applied %q, want %q from the primary", got, e2b)
	}
	if err := rep.ResumeReplay(tctx); err != nil {
		t.Fatal(err)
	}
	e3 := create("/3")
	if err := rep.CatchUp(tctx); err != nil {
		t.Fatal(err)
	}
	if got := waitEntries(t, r, e3); !slices.Equal(got, []string{e3}) {
		t.Fatalf("after the replica caught up the loop applied %q, want only %q (e2 and e2b were applied from the primary)", got, e3)
	}

	const warn = "a read from the replica (ro_connection_string) failed"
	base := strings.Count(logs.String(), warn)
	rep.Stop()
	e4 := create("/4")
	waitEntries(t, r, e4)
	e5 := create("/5")
	waitEntries(t, r, e5)
	if n := strings.Count(logs.String(), warn) - base; n != 1 {
		t.Fatalf("replica failure logged %d times, want once; log:\n%s", n, logs.String())
	}
}

// TestPollerLastLookReadsPrimary: an ID that commits out of order just
// before its event timeout, while the replica is behind, is still applied:
// the last look before an ID is dropped reads the primary.
func TestPollerLastLookReadsPrimary(t *testing.T) {
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	inst := postgres.StartInstance(t)
	rep := inst.StartReplica(t)
	ds, raw := openWithRaw(t, sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: inst.DSN(), ROConnectionString: rep.DSN()})
	clk := testclock.New(time.Unix(1_800_000_000, 0))
	r := &recorder{}
	p := New(Config{DataStore: ds, Sink: r, Clock: clk.Now, EventTimeout: time.Minute})
	sync1(t, p)
	wantTook(t, r, nil, nil, 1)

	late := holdEvent(t, raw, "late", clk.Now())
	after, err := ds.CreateEntry(tctx, entry("/after"))
	if err != nil {
		t.Fatal(err)
	}
	sync1(t, p)
	wantTook(t, r, []string{after.Id}, nil, 1)
	if err := rep.CatchUp(tctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.PauseReplay(tctx); err != nil {
		t.Fatal(err)
	}
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	// A stale poll before the timeout: the paused replica does not have
	// the ID yet, which stays tracked.
	if err := p.sync(tctx, datastore.TolerateStale); err != nil {
		t.Fatal(err)
	}
	wantTook(t, r, nil, nil, 1)
	clk.Add(2 * time.Minute)
	if err := p.sync(tctx, datastore.TolerateStale); err != nil {
		t.Fatal(err)
	}
	wantTook(t, r, []string{"late"}, nil, 1)
	if err := rep.ResumeReplay(tctx); err != nil {
		t.Fatal(err)
	}
}
