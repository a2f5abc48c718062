package datastore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore"
	"github.com/spiffe-hw/spire-hw/server/servertest"
)

var fullSize = os.Getenv("BENCH_REPORT") == "1"

// modes are the two settings compared; the query is appended to the
// SQLite connection string.
var modes = []struct{ name, query string }{
	{"NORMAL", "?_synchronous=NORMAL"},
	{"FULL", ""}, // the default
}

// scenario is one way of creating entries, measured in both modes.
type scenario struct {
	name string
	// what the scenario does, for the report.
	what string
	// entries per call and concurrent callers.
	batch, callers int
	// calls per caller per round.
	calls func() int
}

var scenarios = []scenario{
	{name: "datastore", what: "sqlstore CreateEntry, one entry per commit, 1 caller", batch: 1, callers: 1,
		calls: func() int { return pick(1000, 10) }},
	{name: "api-1", what: "BatchCreateEntry over the admin socket, 1 entry per call, 1 caller", batch: 1, callers: 1,
		calls: func() int { return pick(600, 10) }},
	{name: "api-1-c8", what: "BatchCreateEntry over the admin socket, 1 entry per call, 8 callers", batch: 1, callers: 8,
		calls: func() int { return pick(100, 3) }},
	{name: "api-500", what: "BatchCreateEntry over the admin socket, 500 entries per call, 1 caller", batch: 500, callers: 1,
		calls: func() int { return pick(2, 1) }},
}

func pick(full, tiny int) int {
	if fullSize {
		return full
	}
	return tiny
}

func rounds() int { return pick(9, 2) }

// creator creates entries in one mode.
type creator interface {
	create(ctx context.Context, entries []*types.Entry) error
}

type storeCreator struct{ s *sqlstore.Store }

func (c storeCreator) create(ctx context.Context, entries []*types.Entry) error {
	for _, e := range entries {
		if _, err := c.s.CreateEntry(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

type apiCreator struct{ c entryv1.EntryClient }

func (c apiCreator) create(ctx context.Context, entries []*types.Entry) error {
	resp, err := c.c.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
	if err != nil {
		return err
	}
	for _, r := range resp.Results {
		if codes.Code(r.Status.GetCode()) != codes.OK {
			return fmt.Errorf("entry %s: %s", r.GetEntry().GetSpiffeId(), r.Status.GetMessage())
		}
	}
	return nil
}

// newCreator opens the store, or starts a real server, over a fresh SQLite
// file on the disk the tests run on, in the given mode.
func newCreator(t testing.TB, sc scenario, query string) creator {
	t.Helper()
	if sc.name == "datastore" {
		dir, err := os.MkdirTemp("", "dsbench")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		s, err := sqlstore.Open(context.Background(), sqlstore.Config{DatabaseType: sqlstore.SQLite, ConnectionString: filepath.Join(dir, "ds.sqlite3") + query})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return storeCreator{s}
	}
	dir, err := os.MkdirTemp("", "dsbench")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv := servertest.Start(t, servertest.Options{DataStore: fmt.Sprintf("database_type = \"sqlite3\"\nconnection_string = %q", filepath.Join(dir, "ds.sqlite3")+query)})
	return apiCreator{entryv1.NewEntryClient(srv.Admin(t))}
}

// entryMaker hands out entries with IDs unique within a creator.
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

// measure runs one round of sc on c: entries created per second.
func measure(t testing.TB, sc scenario, c creator, m *entryMaker) float64 {
	t.Helper()
	ctx := context.Background()
	calls := sc.calls()
	var wg sync.WaitGroup
	errs := make(chan error, sc.callers)
	start := time.Now()
	for range sc.callers {
		wg.Go(func() {
			for range calls {
				if err := c.create(ctx, m.next(sc.batch)); err != nil {
					errs <- err
					return
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

// result is one scenario's figures.
type result struct {
	sc     scenario
	normal []float64 // entries/s per round
	full   []float64
	ratios []float64 // FULL / NORMAL within each round
}

var (
	loadAtStart = "unknown"
	resultsMu   sync.Mutex
	results     []result
)

// TestEntryCreateSynchronous compares the two modes scenario by scenario,
// rounds alternating which mode goes first so that drift of the machine
// falls on both.
func TestEntryCreateSynchronous(t *testing.T) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			loadAtStart = strings.Join(f[:3], " ")
		}
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var cs [2]creator
			var ms [2]*entryMaker
			for i, md := range modes {
				cs[i] = newCreator(t, sc, md.query)
				ms[i] = &entryMaker{}
				measure(t, sc, cs[i], ms[i]) // warm-up
			}
			r := result{sc: sc}
			for round := range rounds() {
				var rate [2]float64
				order := []int{0, 1}
				if round%2 == 1 {
					order = []int{1, 0}
				}
				for _, i := range order {
					rate[i] = measure(t, sc, cs[i], ms[i])
				}
				r.normal = append(r.normal, rate[0])
				r.full = append(r.full, rate[1])
				r.ratios = append(r.ratios, rate[1]/rate[0])
			}
			resultsMu.Lock()
			results = append(results, r)
			resultsMu.Unlock()
		})
	}
	if fullSize && !t.Failed() {
		if err := writeReport(); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkCreateEntry is one sqlstore CreateEntry per commit in each mode.
func BenchmarkCreateEntry(b *testing.B) {
	for _, md := range modes {
		b.Run("synchronous="+md.name, func(b *testing.B) {
			c := newCreator(b, scenarios[0], md.query)
			m := &entryMaker{}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if err := c.create(ctx, m.next(1)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

func kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// writeReport writes the SQLite durability section of
// ../RESULTS-datastore.md from this run.
func writeReport() error {
	var b strings.Builder
	b.WriteString("# SQLite durability: synchronous=FULL vs NORMAL for entry creation\n\n")
	fmt.Fprintf(&b, "Machine: %d shared CPUs (load average %s at the start), kernel %s, SQLite files on %s (%s). Generated by\n",
		numCPU(), loadAtStart, kernel(), os.TempDir(), fsType(os.TempDir()))
	b.WriteString("`BENCH_REPORT=1 go test -count=1 -run Test ./bench/datastore`. FULL is the default since it syncs the\n")
	b.WriteString("WAL at every commit, so an acknowledged write (an entry, a join token) survives a power loss; NORMAL\n")
	b.WriteString("(`connection_string = \"...?_synchronous=NORMAL\"`) may lose the last commits. Each scenario runs both modes\n")
	b.WriteString("on their own fresh database in the same run, rounds alternating which goes first; the ratio is the\n")
	b.WriteString("median over rounds of the within-round FULL/NORMAL rate (below 100%: FULL is slower).\n\n")
	b.WriteString("| scenario | NORMAL entries/s | FULL entries/s | **FULL / NORMAL** | each round, sorted |\n|---|---:|---:|---:|---|\n")
	for _, r := range results {
		each := slices.Clone(r.ratios)
		sort.Float64s(each)
		var es []string
		for _, e := range each {
			es = append(es, fmt.Sprintf("%.0f%%", 100*e))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | **%.0f%%** | %s |\n", r.sc.what, median(r.normal), median(r.full), 100*median(r.ratios), strings.Join(es, " "))
	}
	fmt.Fprintf(&b, "\n%d rounds per scenario after a warm-up round per mode; entries/s are medians over rounds.\n", rounds())
	return writeSection("sqlite-durability", b.String())
}

func numCPU() int { return runtime.NumCPU() }
