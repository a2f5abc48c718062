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
