package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
	"github.com/spiffe-hw/spire-hw/internal/syncbuf"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// TestEntryPrune: the registration manager deletes the entries whose
// expiry has passed, logs each as SPIRE does, leaves the others, and
// counts each pass as SPIRE's registration_entry.manager.prune call.
func TestEntryPrune(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	ds := sqlitetest.Open(t)
	id := func(p string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: "example.org", Path: p} }
	var created []*types.Entry
	for i, exp := range []int64{now.Unix() - 60, now.Unix() + 60, 0} {
		e, err := ds.CreateEntry(ctx, &types.Entry{SpiffeId: id("/w" + string(rune('a'+i))), ParentId: id("/spire/agent/x"),
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}, ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, e)
	}
	reg := prometheus.NewRegistry()
	m, err := telemetry.New(hclconf.Telemetry{Prometheus: &hclconf.Prometheus{}}, telemetry.Options{Service: telemetry.ServerService, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	p := newEntryPruner(ds, m, slog.New(slog.NewTextHandler(&logs, nil)))
	p.clock = func() time.Time { return now }
	if p.interval != 5*time.Minute {
		t.Errorf("interval %v, want SPIRE's 5m", p.interval)
	}
	if err := p.prune(ctx); err != nil {
		t.Fatal(err)
	}
	left, _, err := ds.ListEntries(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0].Id == created[0].Id || left[1].Id == created[0].Id {
		t.Fatalf("left %v, want all but %s", left, created[0].Id)
	}
	line := logs.String()
	for _, want := range []string{`msg="Pruned an expired registration"`, "entry_id=" + created[0].Id,
		"spiffe_id=spiffe://example.org/wa", "parent_id=spiffe://example.org/spire/agent/x", "retry_interval=5m0s"} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s:\n%s", want, line)
		}
	}
	if strings.Count(line, "Pruned an expired registration") != 1 {
		t.Errorf("want one pruned line:\n%s", line)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var calls float64
	for _, f := range fams {
		if f.GetName() == "spire_server_registration_entry_manager_prune" {
			for _, s := range f.GetMetric() {
				calls += s.GetCounter().GetValue()
			}
		}
	}
	if calls != 1 {
		t.Errorf("registration_entry_manager_prune counted %v times, want 1", calls)
	}
}
