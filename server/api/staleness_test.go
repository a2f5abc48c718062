package api

import (
	"context"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// TestMaxAttestedNodeInfoStaleness: max_attested_node_info_staleness sets
// how long a node read for authentication is trusted; 0, SPIRE's default,
// reads the database on every call.
func TestMaxAttestedNodeInfoStaleness(t *testing.T) {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, tc := range []struct {
		name      string
		staleness *time.Duration
		step      time.Duration // the clock moves this much between calls
		want      int64         // node queries for 5 calls
	}{
		{"unset keeps nodeTTL", nil, time.Second, 1},
		{"zero reads every time", ptr(time.Duration(0)), time.Second, 5},
		{"2s, a call per second", ptr(2 * time.Second), time.Second, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := &countingStore{DataStore: sqlitetest.Open(t)}
			now := time.Unix(1_800_000_000, 0)
			a := New(Config{TrustDomain: td, DataStore: ds, Clock: func() time.Time { return now }, MaxAttestedNodeInfoStaleness: tc.staleness})
			id := spiffeid.RequireFromPath(td, "/spire/agent/join_token/s")
			if err := ds.CreateAttestedNode(ctx, &datastore.AttestedNode{SPIFFEID: id.String(), AttestationType: "join_token",
				CertSerial: "10", CertNotAfter: now.Add(time.Hour).Unix()}); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				if _, err := a.authenticateAgent(ctx, id, &x509.Certificate{SerialNumber: big.NewInt(10)}); err != nil {
					t.Fatal(err)
				}
				now = now.Add(tc.step)
			}
			if got := ds.fetches.Load(); got != tc.want {
				t.Fatalf("5 calls cost %d node queries, want %d", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
