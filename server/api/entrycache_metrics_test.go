package api

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// failingList fails ListEntries while fail is set.
type failingList struct {
	datastore.DataStore
	fail bool
}

func (f *failingList) ListEntries(ctx context.Context, req *datastore.ListEntriesRequest) ([]*types.Entry, string, error) {
	if f.fail {
		return nil, "", status.Error(codes.Unavailable, "database down")
	}
	return f.DataStore.ListEntries(ctx, req)
}

// counterValues maps the status label of family name to its value.
func counterValues(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestEntryCacheReloadMetric: every reload of the entry cache is SPIRE's
// entry.cache.reload call, labelled with its outcome; a snapshot served
// without a reload counts nothing.
func TestEntryCacheReloadMetric(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := telemetry.New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}}, telemetry.Options{Service: telemetry.ServerService, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ds := &failingList{DataStore: sqlitetest.Open(t), fail: true}
	c := newEntryCache(ds, m)
	if _, err := c.snapshot(ctx); err == nil {
		t.Fatal("a snapshot without a database")
	}
	ds.fail = false
	if _, err := c.snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.snapshot(ctx); err != nil { // the same revision: no reload
		t.Fatal(err)
	}
	got := counterValues(t, reg, "spire_server_entry_cache_reload")
	if got["OK"] != 1 || got["Unavailable"] != 1 || len(got) != 2 {
		t.Fatalf("entry_cache_reload by status: %v, want one OK and one Unavailable", got)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var timed uint64
	for _, f := range fams {
		if f.GetName() == "spire_server_entry_cache_reload_elapsed_time" {
			for _, s := range f.GetMetric() {
				timed += s.GetSummary().GetSampleCount()
			}
		}
	}
	if timed != 2 {
		t.Errorf("%d reloads timed, want 2", timed)
	}
}
