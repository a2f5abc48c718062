package multiserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

// batchEngines open a fresh store of each engine.
var batchEngines = []struct {
	name string
	open func(t *testing.T) sqlstore.Config
}{
	{"SQLite", func(t *testing.T) sqlstore.Config {
		dir, err := os.MkdirTemp("", "msbatch")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(dir, "ds.sqlite3")}
	}},
	{"PostgreSQL", func(t *testing.T) sqlstore.Config {
		return sqlstore.Config{DatabaseType: sqlstore.Postgres, ConnectionString: postgres.Start(t)}
	}},
	{"MySQL (MariaDB)", func(t *testing.T) sqlstore.Config {
		return sqlstore.Config{DatabaseType: sqlstore.MySQL, ConnectionString: mariadb.Start(t)}
	}},
}

// batchResult is one engine's entries/s with a transaction per entry
// (CreateEntry in a loop, how BatchCreateEntry wrote before) and one per
// batch (CreateEntries), per round.
type batchResult struct {
	engine       string
	each, batch  []float64
	ratios       []float64
	entriesPerOp int
}

var (
	batchMu      sync.Mutex
	batchResults []batchResult
)

func batchSize() int { return pick(500, 20) }

// TestBatchTransaction measures, per engine on one store, the same
// batches written both ways, alternating which goes first.
func TestBatchTransaction(t *testing.T) {
	for _, eng := range batchEngines {
		s, err := sqlstore.Open(context.Background(), eng.open(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		m := &entryMaker{}
		each := func() float64 {
			entries := m.next(batchSize())
			start := time.Now()
			for _, e := range entries {
				if _, err := s.CreateEntry(context.Background(), e); err != nil {
					t.Fatal(err)
				}
			}
			return float64(len(entries)) / time.Since(start).Seconds()
		}
		batch := func() float64 {
			entries := m.next(batchSize())
			start := time.Now()
			_, errs, err := s.CreateEntries(context.Background(), entries)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			return float64(len(entries)) / time.Since(start).Seconds()
		}
		each()
		batch() // warm-up
		res := batchResult{engine: eng.name, entriesPerOp: batchSize()}
		for r := range pick(5, 1) {
			var e, b float64
			if r%2 == 0 {
				e, b = each(), batch()
			} else {
				b, e = batch(), each()
			}
			res.each, res.batch, res.ratios = append(res.each, e), append(res.batch, b), append(res.ratios, b/e)
		}
		batchMu.Lock()
		batchResults = append(batchResults, res)
		batchMu.Unlock()
	}
}

func batchReport() string {
	batchMu.Lock()
	defer batchMu.Unlock()
	if len(batchResults) == 0 {
		return ""
	}
	out := fmt.Sprintf("\n## One transaction per batch of entries (sqlstore, same store, same run)\n\n"+
		"%d entries written as a transaction each (CreateEntry in a loop: how BatchCreateEntry wrote before\n"+
		"a8295a6) and as one transaction with a savepoint per entry (CreateEntries: how it writes now), alternating\n"+
		"which goes first; the ratio is the median of the per-round ratios.\n\n"+
		"| engine | a transaction per entry, entries/s | one per batch, entries/s | **one per batch / per entry** |\n|---|---:|---:|---:|\n",
		batchResults[0].entriesPerOp)
	for _, r := range batchResults {
		out += fmt.Sprintf("| %s | %.0f | %.0f | **%.2fx** |\n", r.engine, median(r.each), median(r.batch), median(r.ratios))
	}
	return out
}
