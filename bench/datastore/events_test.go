package datastore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/internal/uuid"
	"github.com/spiffe-hw/spire-hw/server/api"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/events"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

func TestMain(m *testing.M) {
	stop := mariadb.Share()
	code := postgres.Main(m)
	stop()
	os.Exit(code)
}

// eventEngines are the engines servers share a database on, and SQLite:
// two stores on one file, as two servers on one host could share it, the
// baseline of what applying an event costs without a network between.
var eventEngines = []struct {
	name string
	typ  string
	dsn  func(testing.TB) string
}{
	{"SQLite", sqlstore.SQLite, func(tb testing.TB) string { return filepath.Join(tb.TempDir(), "ds.sqlite3") }},
	{"PostgreSQL", sqlstore.Postgres, postgres.Start},
	{"MariaDB", sqlstore.MySQL, mariadb.Start},
}

// watchSink is a server's API as its poller's sink, telling the benchmark
// when an entry it waits for has been applied.
type watchSink struct {
	*api.API
	mu   sync.Mutex
	wait map[string]chan time.Time
}

func (s *watchSink) EntriesChanged(ctx context.Context, ids []string) error {
	err := s.API.EntriesChanged(ctx, ids)
	now := time.Now()
	s.mu.Lock()
	for _, id := range ids {
		if ch := s.wait[id]; ch != nil {
			ch <- now
			delete(s.wait, id)
		}
	}
	s.mu.Unlock()
	return err
}

func (s *watchSink) await(id string) chan time.Time {
	ch := make(chan time.Time, 1)
	s.mu.Lock()
	s.wait[id] = ch
	s.mu.Unlock()
	return ch
}

// benchServer is the part of a server that the events concern: its own
// connection pool to the shared database, its API caches and its poller.
type benchServer struct {
	ds     *sqlstore.Store
	sink   *watchSink
	poller *events.Poller
}

func newBenchServer(t testing.TB, typ, dsn string) *benchServer {
	t.Helper()
	ctx := context.Background()
	ds, err := sqlstore.Open(ctx, sqlstore.Config{DatabaseType: typ, ConnectionString: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	a := api.New(api.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataStore: ds})
	s := &benchServer{ds: ds, sink: &watchSink{API: a, wait: map[string]chan time.Time{}}}
	s.poller = events.New(events.Config{DataStore: ds, Sink: s.sink})
	a.FollowEvents(s.poller.Sync, s.poller.Interval())
	if err := s.poller.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func benchEntry(i int) *types.Entry {
	id, err := uuid.NewV4()
	if err != nil {
		panic(err)
	}
	return &types.Entry{Id: id, SpiffeId: &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d", i)},
		ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/agent/%d", i%100)},
		Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}}}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

type eventResult struct {
	engine             string
	samples            int
	p50, p99, maxLat   time.Duration
	base, changed      int
	applyPerSec        float64
	reloadPerSec       float64
	applyMs, reloadMs  float64
	applyVsReloadRatio float64
	// oneMs is B's time to take in a single changed entry from its
	// event, and oneRatio the full reload's time over it.
	oneMs, oneRatio float64
	rounds          int
}

var (
	eventResultsMu sync.Mutex
	eventResults   []eventResult
)

// TestEventPropagation measures, per engine, with two servers' caches on
// one database (each its own pool, API caches and events poller at the
// default cache_reload_interval): how long after server A acknowledged an
// entry's creation server B has it in its cache (p50/p99), and how fast B
// applies a burst of changed entries from their events against a full
// reload of every entry, the same run's baseline (what the revision-based
// cache did on any change).
func TestEventPropagation(t *testing.T) {
	for _, eng := range eventEngines {
		t.Run(eng.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := eng.dsn(t)
			a := newBenchServer(t, eng.typ, dsn)
			b := newBenchServer(t, eng.typ, dsn)
			runCtx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for _, s := range []*benchServer{a, b} {
				wg.Add(1)
				go func() { defer wg.Done(); _ = s.poller.Run(runCtx) }()
			}
			defer func() { cancel(); wg.Wait() }()

			r := eventResult{engine: eng.name, samples: pick(300, 10)}
			var lat []time.Duration
			for i := range r.samples {
				e := benchEntry(i)
				applied := b.sink.await(e.Id)
				if _, err := a.ds.CreateEntry(ctx, e); err != nil {
					t.Fatal(err)
				}
				acked := time.Now()
				select {
				case at := <-applied:
					lat = append(lat, at.Sub(acked))
				case <-time.After(30 * time.Second):
					t.Fatalf("entry %d not applied on B within 30 s", i)
				}
				// Writes land at random points of B's interval.
				time.Sleep(time.Duration(rand.Int64N(int64(b.poller.Interval()))))
			}
			r.p50, r.p99, r.maxLat = percentile(lat, 0.5), percentile(lat, 0.99), slices.Max(lat)
			cancel()
			wg.Wait()

			// Burst: base entries in all, changed of them changed on A,
			// then B applies their events (timed) or reloads (timed).
			r.base, r.changed = pick(10000, 200), pick(1000, 20)
			ids := make([]string, 0, r.base)
			for i := range r.base - r.samples {
				e, err := a.ds.CreateEntry(ctx, benchEntry(r.samples+i))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, e.Id)
			}
			if err := b.poller.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			r.rounds = pick(7, 2)
			var applyRates, reloadRates, applyMs, reloadMs, ratios, oneMs, oneRatios []float64
			for round := range r.rounds {
				// One change, the common case.
				if _, err := a.ds.UpdateEntry(ctx, &types.Entry{Id: ids[round], Hint: fmt.Sprint("one", round)}, &types.EntryMask{Hint: true}); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if err := b.poller.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				one := time.Since(start)
				start = time.Now()
				if err := b.sink.Reload(ctx); err != nil {
					t.Fatal(err)
				}
				oneMs = append(oneMs, float64(one.Microseconds())/1000)
				oneRatios = append(oneRatios, time.Since(start).Seconds()/one.Seconds())

				from := round * r.changed % (len(ids) - r.changed + 1)
				for _, id := range ids[from : from+r.changed] {
					if _, err := a.ds.UpdateEntry(ctx, &types.Entry{Id: id, Hint: fmt.Sprint(round)}, &types.EntryMask{Hint: true}); err != nil {
						t.Fatal(err)
					}
				}
				before := b.poller.Stats().Applied
				start = time.Now()
				if err := b.poller.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				apply := time.Since(start)
				n := b.poller.Stats().Applied - before
				if n == 0 {
					t.Fatal("no events applied")
				}
				start = time.Now()
				if err := b.sink.Reload(ctx); err != nil {
					t.Fatal(err)
				}
				reload := time.Since(start)
				applyRates = append(applyRates, float64(n)/apply.Seconds())
				reloadRates = append(reloadRates, float64(r.base)/reload.Seconds())
				applyMs = append(applyMs, float64(apply.Microseconds())/1000)
				reloadMs = append(reloadMs, float64(reload.Microseconds())/1000)
				ratios = append(ratios, reload.Seconds()/apply.Seconds())
			}
			r.applyPerSec, r.reloadPerSec = median(applyRates), median(reloadRates)
			r.applyMs, r.reloadMs, r.applyVsReloadRatio = median(applyMs), median(reloadMs), median(ratios)
			r.oneMs, r.oneRatio = median(oneMs), median(oneRatios)
			t.Logf("%s: A->B p50 %v p99 %v max %v; one change applied in %.2f ms (reload/apply %.0fx); %d events applied in %.1f ms (%.0f/s), full reload of %d entries %.1f ms (%.0f entries/s), reload/apply %.1fx",
				eng.name, r.p50, r.p99, r.maxLat, r.oneMs, r.oneRatio, r.changed, r.applyMs, r.applyPerSec, r.base, r.reloadMs, r.reloadPerSec, r.applyVsReloadRatio)
			eventResultsMu.Lock()
			eventResults = append(eventResults, r)
			eventResultsMu.Unlock()
		})
	}
	if fullSize && !t.Failed() {
		if err := writeEventsReport(); err != nil {
			t.Fatal(err)
		}
	}
}

// writeEventsReport writes the events section of ../RESULTS-datastore.md.
func writeEventsReport() error {
	var b strings.Builder
	b.WriteString("# Several servers on one database: change events (issue 14)\n\n")
	fmt.Fprintf(&b, "Machine: %d shared CPUs (load average %s at the start), kernel %s; the database servers (sim/postgres,\n", numCPU(), loadNow(), kernel())
	b.WriteString("sim/mariadb) run on the same CPUs. Generated by `BENCH_REPORT=1 go test -count=1 -run TestEventPropagation ./bench/datastore`.\n")
	fmt.Fprintf(&b, "Two servers' caches share the database, each with its own pool, API caches and events poller at the default\n")
	fmt.Fprintf(&b, "`cache_reload_interval` (%v). **A -> B** is how long after server A acknowledged an entry's creation\n", events.DefaultInterval)
	b.WriteString("server B has it in its cache, with writes at random points of B's interval; before events, it was\n")
	b.WriteString("up to 1 s for entries and the bundle and up to 30 s for bans and evictions. **Burst**: entries changed on A\n")
	b.WriteString("at once (and **one** entry changed), applied by B from their events, against B reloading every entry\n")
	b.WriteString("(what a revision-based cache does on any change), in the same round; the ratios are the medians over\n")
	b.WriteString("rounds of reload time / apply time.\n\n")
	b.WriteString("| engine | A -> B p50 | p99 | max | one change: apply | **reload / apply** | burst: events applied/s | full reload, entries/s | **reload / apply** |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range eventResults {
		fmt.Fprintf(&b, "| %s | %v | %v | %v | %.2f ms | **%.0fx** | %.0f (%d changed of %d, %.1f ms) | %.0f (%.1f ms) | **%.1fx** |\n", r.engine,
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.maxLat.Round(time.Millisecond), r.oneMs, r.oneRatio,
			r.applyPerSec, r.changed, r.base, r.applyMs, r.reloadPerSec, r.reloadMs, r.applyVsReloadRatio)
	}
	if len(eventResults) > 0 {
		fmt.Fprintf(&b, "\n%d samples for A -> B, %d burst rounds per engine. Between the servers of test/e2e (TestThreeServersPropagation, real processes)\n", eventResults[0].samples, eventResults[0].rounds)
		b.WriteString("the same changes, and bans, evictions and a new authority in the bundle, took 0.1-0.25 s end to end.\n")
	}
	return writeSection("events", b.String())
}

func loadNow() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			return strings.Join(f[:3], " ")
		}
	}
	return "unknown"
}
