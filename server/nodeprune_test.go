package server

import (
	"context"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// TestNodePrune: prune_attested_nodes_expired_for removes the nodes whose
// SVID expired longer ago than the duration, never a banned one, and one
// that cannot re-attest only with prune_tofu_nodes.
func TestNodePrune(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	node := func(name string, expiredAgo time.Duration, reattest, banned bool) *datastore.AttestedNode {
		n := &datastore.AttestedNode{SPIFFEID: "spiffe://example.org/spire/agent/x/" + name, AttestationType: "x",
			CertSerial: "1", CertNotAfter: now.Add(-expiredAgo).Unix(), CanReattest: reattest}
		if banned {
			n.CertSerial = ""
		}
		return n
	}
	for _, tc := range []struct {
		name        string
		includeTOFU bool
		left        []string
	}{
		{"reattestable only", false, []string{"banned", "recent", "tofu-old", "valid"}},
		{"with prune_tofu_nodes", true, []string{"banned", "recent", "valid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ds := sqlitetest.Open(t)
			for _, n := range []*datastore.AttestedNode{
				node("old", 48*time.Hour, true, false),
				node("recent", time.Hour, true, false),
				node("valid", -time.Hour, true, false),
				node("tofu-old", 48*time.Hour, false, false),
				node("banned", 48*time.Hour, true, true),
			} {
				if err := ds.CreateAttestedNode(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
			p := newNodePruner(ds, 24*time.Hour, tc.includeTOFU, quiet())
			p.clock = func() time.Time { return now }
			if p.interval < 45*time.Minute || p.interval > 75*time.Minute {
				t.Errorf("interval %v, want SPIRE's hour give or take 15 minutes", p.interval)
			}
			if _, err := p.prune(ctx); err != nil {
				t.Fatal(err)
			}
			nodes, _, err := ds.ListAttestedNodes(ctx, &datastore.ListAttestedNodesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, n := range nodes {
				left = append(left, n.SPIFFEID[len("spiffe://example.org/spire/agent/x/"):])
			}
			sort.Strings(left)
			if !slices.Equal(left, tc.left) {
				t.Fatalf("left %q, want %q", left, tc.left)
			}
		})
	}
}

// reattestBeforeDelete is a store on which another server re-attests the
// node just before the pruner's delete reaches the database.
type reattestBeforeDelete struct {
	datastore.DataStore
	t   *testing.T
	now time.Time
}

func (s reattestBeforeDelete) DeleteAttestedNodeIf(ctx context.Context, id string, expect datastore.NodeSerials) (*datastore.AttestedNode, error) {
	n, err := s.FetchAttestedNode(ctx, id)
	if err != nil {
		s.t.Fatal(err)
	}
	re := *n
	re.CertSerial, re.CertNotAfter = "2", s.now.Add(time.Hour).Unix()
	if err := s.UpdateAttestedNode(ctx, &re, n.Serials()); err != nil {
		s.t.Fatal(err)
	}
	return s.DataStore.DeleteAttestedNodeIf(ctx, id, expect)
}

// TestNodePruneReattested: a node that re-attests (through another server)
// after the pruner read it expired stays, with its new SVID.
func TestNodePruneReattested(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	ds := sqlitetest.Open(t)
	const id = "spiffe://example.org/spire/agent/x/old"
	if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id, AttestationType: "x",
		CertSerial: "1", CertNotAfter: now.Add(-48 * time.Hour).Unix(), CanReattest: true}); err != nil {
		t.Fatal(err)
	}
	p := newNodePruner(reattestBeforeDelete{DataStore: ds, t: t, now: now}, 24*time.Hour, false, quiet())
	p.clock = func() time.Time { return now }
	n, err := p.prune(ctx)
	if err != nil || n != 0 {
		t.Fatalf("prune = %d, %v; want 0 pruned", n, err)
	}
	got, err := ds.FetchAttestedNode(ctx, id)
	if err != nil || got.CertSerial != "2" {
		t.Fatalf("re-attested node after prune: %+v, %v", got, err)
	}
}
