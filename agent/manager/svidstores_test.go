package manager

import (
	"context"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/keymanager/disk"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor/jointoken"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe-hw/spire-hw/agent/svidstore/external"
	"github.com/spiffe-hw/spire-hw/internal/grpctest"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	svidstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/svidstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// storePlugin is an SDK SVIDStore that keeps what it is given by its
// metadata, like a secrets manager keyed by secret name.
type storePlugin struct {
	svidstorev1.UnimplementedSVIDStoreServer
	mu         sync.Mutex
	puts       []*svidstorev1.PutX509SVIDRequest
	deletes    [][]string
	deleteFail error
}

func (p *storePlugin) PutX509SVID(_ context.Context, req *svidstorev1.PutX509SVIDRequest) (*svidstorev1.PutX509SVIDResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.puts = append(p.puts, req)
	return &svidstorev1.PutX509SVIDResponse{}, nil
}

func (p *storePlugin) DeleteX509SVID(_ context.Context, req *svidstorev1.DeleteX509SVIDRequest) (*svidstorev1.DeleteX509SVIDResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleteFail != nil {
		return nil, p.deleteFail
	}
	p.deletes = append(p.deletes, req.Metadata)
	return &svidstorev1.DeleteX509SVIDResponse{}, nil
}

// calls returns the number of puts and the deletes so far.
func (p *storePlugin) calls() (int, [][]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.puts), slices.Clone(p.deletes)
}

func (p *storePlugin) lastPut() *svidstorev1.PutX509SVIDRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.puts[len(p.puts)-1]
}

// serveStore runs the plugin on a Unix socket and returns the agent's
// adapter over it.
func serveStore(t *testing.T, p svidstorev1.SVIDStoreServer, name string) svidstore.Store {
	t.Helper()
	conn := grpctest.Serve(t, func(srv *grpc.Server) { svidstorev1.RegisterSVIDStoreServer(srv, p) })
	return external.New(conn, name)
}

func storeEntry(id string, rev int64, store string, meta ...string) *types.Entry {
	e := &types.Entry{Id: id, SpiffeId: &types.SPIFFEID{TrustDomain: testTD.Name(), Path: "/stored/" + id}, RevisionNumber: rev, StoreSvid: true}
	for _, m := range meta {
		e.Selectors = append(e.Selectors, &types.Selector{Type: store, Value: m})
	}
	return e
}

func storeSelectors(store string, meta ...string) []*types.Selector {
	var out []*types.Selector
	for _, m := range meta {
		out = append(out, &types.Selector{Type: store, Value: m})
	}
	return out
}

// TestSVIDStores: entries marked store_svid are not served to workloads;
// their SVIDs go to the store their selectors name, again when the entry
// changes (after deleting the old copy if its metadata changed), and are
// deleted when the entry goes away, retried until the store agrees.
func TestSVIDStores(t *testing.T) {
	ca := newTestCA(t)
	fedCA := newTestCA(t)
	fedBundle := fedCA.bundle()
	fedBundle.TrustDomain = "other.org"
	db := storeEntry("db", 1, "fake", "secretname:db", "region:x")
	db.FederatesWith = []string{"other.org"}
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t",
		federatedBundles: map[string]*types.Bundle{"other.org": fedBundle},
		entries: []*types.Entry{
			workloadEntry("web", 1, "uid:1000"),
			db,
			storeEntry("lost", 1, "nostore", "secretname:lost"),
		}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	plugin := &storePlugin{}
	dir := t.TempDir()
	km, err := disk.New(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{
		TrustDomain: testTD, ServerAddress: addr, DataDir: dir, TrustBundle: []*x509.Certificate{ca.cert},
		NodeAttestor: jointoken.New("t"), KeyManager: km,
		SVIDStores: map[string]svidstore.Store{"fake": serveStore(t, plugin, "fake")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	startPusher(t, m.stored)
	if err := m.attest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitPushed(t, m.stored)

	if ids := identityIDs(m.FetchWorkloadUpdate(selectors("uid:1000"))); !slices.Equal(ids, []string{"web"}) {
		t.Fatalf("served %v, want [web]", ids)
	}
	if ids := identityIDs(m.FetchWorkloadUpdate(storeSelectors("fake", "secretname:db", "region:x"))); len(ids) != 0 {
		t.Fatalf("store entry served to a workload: %v", ids)
	}
	if _, ok := m.stored.svids()["lost"]; ok {
		t.Fatal("SVID minted for an entry whose store is not configured")
	}

	puts, deletes := plugin.calls()
	if puts != 1 || len(deletes) != 0 {
		t.Fatalf("after first sync: %d puts, deletes %v; want 1 put", puts, deletes)
	}
	req := plugin.lastPut()
	if req.Svid.SpiffeID != "spiffe://example.org/stored/db" || !slices.Equal(req.Metadata, []string{"secretname:db", "region:x"}) {
		t.Fatalf("put %s with metadata %v", req.Svid.SpiffeID, req.Metadata)
	}
	var chain []byte
	for _, c := range req.Svid.CertChain {
		chain = append(chain, c...)
	}
	svid, err := x509svid.ParseRaw(chain, req.Svid.PrivateKey)
	if err != nil {
		t.Fatalf("stored SVID and key do not go together: %v", err)
	}
	roots, err := x509.ParseCertificates(concatRaw(req.Svid.Bundle))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(testTD, roots)); err != nil {
		t.Fatalf("stored SVID does not verify against the stored bundle: %v", err)
	}
	if req.Svid.ExpiresAt != svid.Certificates[0].NotAfter.Unix() {
		t.Fatal("wrong expiry")
	}
	fed, err := x509.ParseCertificates(req.FederatedBundles["other.org"])
	if err != nil || len(fed) != 1 || !fed[0].Equal(fedCA.cert) || len(req.FederatedBundles) != 1 {
		t.Fatalf("federated bundles %v (%v)", req.FederatedBundles, err)
	}

	// Nothing changed: nothing pushed.
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitPushed(t, m.stored)
	if puts, _ := plugin.calls(); puts != 1 {
		t.Fatalf("%d puts after an idle sync, want 1", puts)
	}

	// New metadata: the old secret is removed, the new one written.
	srv.mu.Lock()
	srv.entries[1] = storeEntry("db", 2, "fake", "secretname:db2")
	srv.mu.Unlock()
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitPushed(t, m.stored)
	puts, deletes = plugin.calls()
	if puts != 2 || len(deletes) != 1 || !slices.Equal(deletes[0], []string{"secretname:db", "region:x"}) {
		t.Fatalf("after moving: %d puts, deletes %v", puts, deletes)
	}
	if got := plugin.lastPut().Metadata; !slices.Equal(got, []string{"secretname:db2"}) {
		t.Fatalf("moved put metadata %v", got)
	}

	// Entry removed while the store is down: the delete is retried.
	plugin.mu.Lock()
	plugin.deleteFail = status.Error(codes.Unavailable, "down")
	plugin.mu.Unlock()
	srv.mu.Lock()
	srv.entries = slices.Delete(srv.entries, 1, 2)
	srv.mu.Unlock()
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitPushed(t, m.stored)
	if _, ok := m.stored.record("db"); !ok {
		t.Fatal("record dropped although the store did not delete the SVID")
	}
	plugin.mu.Lock()
	plugin.deleteFail = nil
	plugin.mu.Unlock()
	if err := m.sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitPushed(t, m.stored)
	_, deletes = plugin.calls()
	if len(deletes) != 2 || !slices.Equal(deletes[1], []string{"secretname:db2"}) {
		t.Fatalf("deletes %v, want the removed entry's secret deleted", deletes)
	}
	if _, ok := m.stored.record("db"); ok {
		t.Fatal("record kept after the store deleted the SVID")
	}
	if puts, _ := plugin.calls(); puts != 2 {
		t.Fatalf("%d puts, want 2", puts)
	}
}

// A delete the store refuses as malformed cannot succeed later: it is not
// retried.
func TestSVIDStoreDeleteInvalidArgument(t *testing.T) {
	plugin := &storePlugin{deleteFail: status.Error(codes.InvalidArgument, "bad metadata")}
	s := newStoredSVIDs(map[string]svidstore.Store{"fake": serveStore(t, plugin, "fake")}, testTD, slog.New(slog.DiscardHandler))
	r := &storeRecord{put: &storePut{entry: storeEntry("x", 1, "fake", "k:v")}}
	s.records["x"] = r
	s.push(context.Background())
	if _, ok := s.record("x"); ok {
		t.Fatal("record kept after InvalidArgument")
	}
}

// blockingStore is an SVIDStore plugin whose puts hang until released, as
// a plugin stuck on its backend does until the host's call bound.
type blockingStore struct {
	svidstorev1.UnimplementedSVIDStoreServer
	entered chan struct{} // receives once per put that started
	release chan struct{} // closed to let puts return
	mu      sync.Mutex
	puts    int
}

func (p *blockingStore) PutX509SVID(ctx context.Context, _ *svidstorev1.PutX509SVIDRequest) (*svidstorev1.PutX509SVIDResponse, error) {
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.puts++
	return &svidstorev1.PutX509SVIDResponse{}, nil
}

// TestHungSVIDStoreDoesNotDelaySync: while a store's put hangs, the sync
// loop goes on: a second sync completes and workloads get the SVID of an
// entry it brought. Once released, the put is recorded and not repeated.
func TestHungSVIDStoreDoesNotDelaySync(t *testing.T) {
	ca := newTestCA(t)
	srv := &fakeServer{ca: ca, agentTTL: time.Hour, svidTTL: time.Hour, token: "t",
		entries: []*types.Entry{
			workloadEntry("web", 1, "uid:1000"),
			storeEntry("db", 1, "fake", "secretname:db"),
		}}
	addr, _ := srv.serve(t, "127.0.0.1:0")
	plugin := &blockingStore{entered: make(chan struct{}, 10), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(plugin.release) }) }
	t.Cleanup(release)
	dir := t.TempDir()
	km, err := disk.New(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{
		TrustDomain: testTD, ServerAddress: addr, DataDir: dir, TrustBundle: []*x509.Certificate{ca.cert},
		NodeAttestor: jointoken.New("t"), KeyManager: km, SyncInterval: 50 * time.Millisecond,
		SVIDStores: map[string]svidstore.Store{"fake": serveStore(t, plugin, "fake")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sub, _ := m.SubscribeToCacheChanges(context.Background(), selectors("uid:2000"))
	defer sub.Finish()
	stop := run(t, m)

	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case <-plugin.entered:
	case <-timeout.C:
		t.Fatal("timed out waiting for the first put")
	}
	// The put hangs; an entry added now must still reach workloads.
	srv.mu.Lock()
	srv.entries = append(srv.entries, workloadEntry("api", 1, "uid:2000"))
	srv.mu.Unlock()
	for served := false; !served; {
		select {
		case u := <-sub.Updates():
			served = slices.Equal(identityIDs(u), []string{"api"})
		case <-timeout.C:
			t.Fatal("timed out waiting for a sync while the store hangs")
		}
	}
	if n := len(plugin.entered); n != 0 {
		t.Fatalf("%d more puts started while one hung; want one push at a time", n)
	}

	release()
	waitPushed(t, m.stored)
	if _, ok := m.stored.record("db"); !ok {
		t.Fatal("db record missing")
	}
	m.stored.mu.Lock()
	put := m.stored.records["db"].put
	m.stored.mu.Unlock()
	if put == nil {
		t.Fatal("released put not recorded")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	plugin.mu.Lock()
	defer plugin.mu.Unlock()
	if plugin.puts != 1 {
		t.Fatalf("%d puts, want 1", plugin.puts)
	}
}

// startPusher runs s's pusher until the test ends, as Run does.
func startPusher(t *testing.T, s *storedSVIDs) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitPushed waits until a push that started after the last schedule has
// completed: what the sync recorded has then reached the stores (or
// failed to).
func waitPushed(t *testing.T, s *storedSVIDs) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	s.mu.Lock()
	want := s.scheduled
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done, ch := s.pushed, s.pushedCh
		s.mu.Unlock()
		if done >= want {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatal("timed out waiting for the SVIDStore push")
		}
	}
}

// record returns the record of an entry ID, under the lock push takes.
func (s *storedSVIDs) record(id string) (*storeRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	return r, ok
}

func concatRaw(ders [][]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, d...)
	}
	return out
}
