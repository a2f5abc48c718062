package multiserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// engine is a datastore engine and how to get a fresh database of it.
type engine struct {
	name string
	// note says how the test database server is set up, for the report.
	note string
	conf func(t *testing.T) string
}

var engines = []engine{
	{"SQLite (baseline)", "a file on /tmp, synchronous=FULL (the default)", func(t *testing.T) string {
		dir, err := os.MkdirTemp("", "msbench")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return fmt.Sprintf("database_type = \"sqlite3\"\nconnection_string = %q", filepath.Join(dir, "ds.sqlite3"))
	}},
	{"PostgreSQL", "sim/postgres: a private server over TCP on loopback, fsync=off, synchronous_commit=off", func(t *testing.T) string {
		return fmt.Sprintf("database_type = \"postgres\"\nconnection_string = %q", postgres.Start(t))
	}},
	{"MySQL (MariaDB)", "sim/mariadb: a private server over TCP on loopback, InnoDB defaults (a log flush at every commit)", func(t *testing.T) string {
		return fmt.Sprintf("database_type = \"mysql\"\nconnection_string = %q", mariadb.Start(t))
	}},
}

// createScenario is one way of creating entries over the admin API.
type createScenario struct {
	what           string
	batch, callers int
	calls          func() int
}

var createScenarios = []createScenario{
	{"BatchCreateEntry, 1 entry per call, 1 caller", 1, 1, func() int { return pick(300, 5) }},
	{"BatchCreateEntry, 1 entry per call, 8 callers", 1, 8, func() int { return pick(60, 2) }},
	{"BatchCreateEntry, 500 entries per call, 1 caller", 500, 1, func() int { return pick(2, 1) }},
}

// engineResult is one scenario's entries/s per engine, per round.
type engineResult struct {
	sc    createScenario
	rates [][]float64 // [engine][round]
}

var (
	engineMu      sync.Mutex
	engineResults []engineResult
)

// TestEngines creates entries through a real server on each engine, the
// engines taking turns within each round so that drift of the machine
// falls on all of them.
func TestEngines(t *testing.T) {
	for _, sc := range createScenarios {
		clients := make([]entryv1.EntryClient, len(engines))
		makers := make([]*entryMaker, len(engines))
		for i, e := range engines {
			srv := servertest.Start(t, servertest.Options{DataStore: e.conf(t)})
			clients[i] = entryv1.NewEntryClient(srv.Admin(t))
			makers[i] = &entryMaker{}
			createRound(t, sc, clients[i], makers[i]) // warm-up
		}
		res := engineResult{sc: sc, rates: make([][]float64, len(engines))}
		for r := range pick(5, 1) {
			for k := range engines {
				i := (k + r) % len(engines)
				res.rates[i] = append(res.rates[i], createRound(t, sc, clients[i], makers[i]))
			}
		}
		engineMu.Lock()
		engineResults = append(engineResults, res)
		engineMu.Unlock()
	}
}

// entryMaker hands out entries with IDs unique within one database.
type entryMaker struct {
	mu sync.Mutex
	n  int
}

func (m *entryMaker) next(k int) []*types.Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*types.Entry, k)
	for i := range out {
		m.n++
		out[i] = &types.Entry{
			SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d", m.n)},
			ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/agent"},
			Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", m.n)}},
		}
	}
	return out
}

// createRound runs sc once and returns entries created per second.
func createRound(t *testing.T, sc createScenario, c entryv1.EntryClient, m *entryMaker) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	calls := sc.calls()
	errs := make(chan error, sc.callers)
	var wg sync.WaitGroup
	start := time.Now()
	for range sc.callers {
		wg.Go(func() {
			for range calls {
				resp, err := c.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: m.next(sc.batch)})
				if err != nil {
					errs <- err
					return
				}
				for _, r := range resp.Results {
					if codes.Code(r.Status.GetCode()) != codes.OK {
						errs <- fmt.Errorf("entry %s: %s", r.GetEntry().GetSpiffeId(), r.Status.GetMessage())
						return
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return float64(sc.callers*calls*sc.batch) / elapsed.Seconds()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
