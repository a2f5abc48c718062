package api

import (
	"context"
	"crypto/x509"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/datastore/sqlstore/sqlitetest"
)

// countingStore is the real SQLite store counting node fetches; during
// runs while set, as another writer racing with the read would.
type countingStore struct {
	datastore.DataStore
	fetches atomic.Int64
	during  func()
}

func (c *countingStore) FetchAttestedNode(ctx context.Context, id string) (*datastore.AttestedNode, error) {
	c.fetches.Add(1)
	n, err := c.DataStore.FetchAttestedNode(ctx, id)
	if c.during != nil {
		c.during()
	}
	return n, err
}

// TestNodeCache: repeated calls of an agent cost one query per nodeTTL; a
// change written by another server (straight to the shared database) is
// seen once the TTL passes, or at once when it is a serial the cached node
// does not know.
func TestNodeCache(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	ds := &countingStore{DataStore: st}
	now := time.Unix(1_800_000_000, 0)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a := New(Config{TrustDomain: td, DataStore: ds, Clock: func() time.Time { return now }})

	id := spiffeid.RequireFromPath(td, "/spire/agent/join_token/n1")
	node := &datastore.AttestedNode{SPIFFEID: id.String(), AttestationType: "join_token", CertSerial: "10",
		CertNotAfter: now.Add(time.Hour).Unix(), Selectors: []*types.Selector{{Type: "t", Value: "v"}}}
	if err := st.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	cert := func(serial int64) *x509.Certificate { return &x509.Certificate{SerialNumber: big.NewInt(serial)} }

	for range 5 {
		n, err := a.authenticateAgent(ctx, id, cert(10))
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Selectors) != 1 {
			t.Fatalf("cached node lost its selectors: %+v", n)
		}
	}
	if got := ds.fetches.Load(); got != 1 {
		t.Fatalf("5 calls cost %d node queries, want 1", got)
	}

	// Another server renews the agent: the new serial works at once.
	renewed := *node
	renewed.NewCertSerial, renewed.NewCertNotAfter, renewed.Selectors = "11", now.Add(2*time.Hour).Unix(), nil
	if err := st.UpdateAttestedNode(ctx, &renewed, node.Serials()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.authenticateAgent(ctx, id, cert(11)); err != nil {
		t.Fatalf("serial renewed through another server refused: %v", err)
	}
	// Using it made it current and the old one is now refused, at once:
	// this server wrote that change.
	if _, err := a.authenticateAgent(ctx, id, cert(10)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("old serial after activation: %v", err)
	}

	// Another server bans the agent: refused once nodeTTL has passed.
	banned, err := st.FetchAttestedNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	read := banned.Serials()
	banned.CertSerial, banned.NewCertSerial, banned.Selectors = "", "", nil
	if err := st.UpdateAttestedNode(ctx, banned, read); err != nil {
		t.Fatal(err)
	}
	now = now.Add(nodeTTL)
	if _, err := a.authenticateAgent(ctx, id, cert(11)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent banned through another server still served after %v: %v", nodeTTL, err)
	}
	// A clock that steps back does not revive a stale copy.
	a.nodes.m[id.String()] = cachedNode{node: node, at: now.Add(time.Minute)}
	if _, err := a.authenticateAgent(ctx, id, cert(10)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("copy from the future trusted: %v", err)
	}
}

// TestNodeCacheRaces: a node read before this server banned the agent is
// not cached after the ban; a renewal through a cached (stale) node is
// refused when another server banned the agent, and does not undo the ban.
func TestNodeCacheRaces(t *testing.T) {
	ctx := context.Background()
	st := sqlitetest.Open(t)
	ds := &countingStore{DataStore: st}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a := New(Config{TrustDomain: td, DataStore: ds})
	id := spiffeid.RequireFromPath(td, "/spire/agent/join_token/n2")
	node := &datastore.AttestedNode{SPIFFEID: id.String(), AttestationType: "join_token", CertSerial: "20", CertNotAfter: time.Now().Add(time.Hour).Unix()}
	if err := st.CreateAttestedNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	cert := &x509.Certificate{SerialNumber: big.NewInt(20)}

	// The ban lands while the call's read is in flight.
	ds.during = func() {
		ds.during = nil
		banned := *node
		banned.CertSerial, banned.NewCertSerial = "", ""
		if err := st.UpdateAttestedNode(ctx, &banned, node.Serials()); err != nil {
			t.Error(err)
		}
		a.nodes.forget(id.String())
	}
	if _, err := a.authenticateAgent(ctx, id, cert); err != nil {
		t.Fatalf("the call that raced with the ban: %v", err)
	}
	if _, err := a.authenticateAgent(ctx, id, cert); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the ban: %v, want PermissionDenied", err)
	}

	// Unbanned again, cached; then another server bans it behind the cache.
	if err := st.UpdateAttestedNode(ctx, node, datastore.NodeSerials{}); err != nil {
		t.Fatal(err)
	}
	a.nodes.forget(id.String())
	cached, err := a.authenticateAgent(ctx, id, cert)
	if err != nil {
		t.Fatal(err)
	}
	banned := *node
	banned.CertSerial, banned.NewCertSerial = "", ""
	if err := st.UpdateAttestedNode(ctx, &banned, node.Serials()); err != nil {
		t.Fatal(err)
	}
	svc := &AgentService{api: a}
	callCtx := context.WithValue(ctx, callerKey{}, &Caller{Role: RoleAgent, ID: id, Cert: cert, Node: cached})
	if _, err := svc.RenewAgent(callCtx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: []byte("unused")}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renewal of an agent banned behind the cache: %v, want PermissionDenied", err)
	}
	if got, err := st.FetchAttestedNode(ctx, id.String()); err != nil || !got.Banned() {
		t.Fatalf("the ban was undone: %+v, %v", got, err)
	}
}
