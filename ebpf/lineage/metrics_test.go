package lineage

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sample returns the value of the one sample of metric name.
func sample(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestCollector: the collector reports what the tracer saw, passes
// client_golang's lint, and counts new events as processes run.
func TestCollector(t *testing.T) {
	tr := startTracer(t, Options{})
	c := NewCollector(tr)
	if n := testutil.CollectAndCount(c); n != 4 {
		t.Fatalf("%d metrics, want 4", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	before := sample(t, reg, "spire_agent_lineage_events_total")
	for range 20 {
		if err := exec.Command("/bin/true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Each run is at least a fork, an exec and an exit.
	if got := sample(t, reg, "spire_agent_lineage_events_total"); got < before+60 {
		t.Errorf("events went from %v to %v after 20 processes", before, got)
	}
	if got, want := sample(t, reg, "spire_agent_lineage_table_processes"), float64(tr.Table().Len()); got != want {
		t.Errorf("table size %v, want %v", got, want)
	}
	want := `
# HELP spire_agent_lineage_ringbuf_drops_total Events the kernel could not put in the lineage ring buffer because it was full.
# TYPE spire_agent_lineage_ringbuf_drops_total counter
spire_agent_lineage_ringbuf_drops_total 0
# HELP spire_agent_lineage_table_overflows_total Processes not added because the lineage table was full of live processes.
# TYPE spire_agent_lineage_table_overflows_total counter
spire_agent_lineage_table_overflows_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "spire_agent_lineage_ringbuf_drops_total", "spire_agent_lineage_table_overflows_total"); err != nil {
		t.Fatal(err)
	}
}

// TestCollectorOverflow: a table too small for the machine counts the
// processes it could not hold.
func TestCollectorOverflow(t *testing.T) {
	tr := startTracer(t, Options{Table: TableOptions{MaxProcesses: 2}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(tr))
	if got := sample(t, reg, "spire_agent_lineage_table_overflows_total"); got == 0 {
		t.Fatal("no overflow counted with a 2-entry table")
	}
	if got := sample(t, reg, "spire_agent_lineage_table_processes"); got > 2 {
		t.Fatalf("table holds %v processes, bound is 2", got)
	}
}
