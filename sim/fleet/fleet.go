// Package fleet simulates many SPIRE agents in one process, for fleet-scale
// benchmarks of a server (ours or upstream SPIRE) without a process per
// agent. Each simulated agent is a real identity: it attests with a join
// token over the server API, holds its own agent SVID and mTLS connection,
// and runs the sync loop a real agent runs every interval (GetBundle,
// SyncAuthorizedEntries, BatchNewX509SVID for entries it holds no SVID
// for). The fleet records how long each sync takes.
package fleet

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// DefaultSyncInterval is a SPIRE agent's sync interval.
const DefaultSyncInterval = 5 * time.Second

// Server is where the fleet attests and syncs.
type Server struct {
	// Addr is the server's agent API, host:port.
	Addr string
	// Addrs, when set, are the agent APIs of several servers sharing one
	// database: each agent connects to all of them and balances its
	// calls round robin, as a real agent does with a server_address that
	// resolves to several addresses, so that a server that dies is failed
	// over. Addr is then ignored.
	Addrs []string
	// Bundle authenticates the server.
	Bundle *x509bundle.Bundle
}

// Fleet is a set of simulated agents of one server.
type Fleet struct {
	srv      Server
	interval time.Duration
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	agents  []*agent
	lat     []time.Duration
	failed  int
	lastErr error
	// since is when Collect was last called: a sync that started before
	// it belongs to no window and is not recorded.
	since time.Time
}

// New returns an empty fleet whose agents sync every interval (0 means
// DefaultSyncInterval).
func New(srv Server, interval time.Duration) *Fleet {
	if interval <= 0 {
		interval = DefaultSyncInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fleet{srv: srv, interval: interval, ctx: ctx, cancel: cancel}
}

// agent is one simulated agent.
type agent struct {
	id   spiffeid.ID
	conn *grpc.ClientConn
	key  crypto.Signer
	csr  []byte

	mu    sync.Mutex
	svids map[string]bool // entry IDs it holds an SVID for
	// lastOK is when the agent's last successful sync started.
	lastOK time.Time
}

// Add attests a new agent with token and starts its sync loop at a random
// phase of the interval, as agents started over time would be. It returns
// the agent's SPIFFE ID, to parent its entries to.
func (f *Fleet) Add(ctx context.Context, token string) (spiffeid.ID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("fleet: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("fleet: %w", err)
	}
	tconn, err := dial(f.srv, nil)
	if err != nil {
		return spiffeid.ID{}, err
	}
	svid, err := AttestJoinToken(ctx, tconn, f.srv.Bundle, token, key, csr)
	tconn.Close()
	if err != nil {
		return spiffeid.ID{}, err
	}
	conn, err := dial(f.srv, svid)
	if err != nil {
		return spiffeid.ID{}, err
	}
	a := &agent{id: svid.ID, conn: conn, key: key, csr: csr, svids: map[string]bool{}}
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.mu.Unlock()
	f.wg.Add(1)
	go f.loop(a)
	return svid.ID, nil
}

// Len is the number of agents.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.agents)
}

// Held is the number of SVIDs the fleet's agents hold.
func (f *Fleet) Held() int {
	f.mu.Lock()
	agents := f.agents
	f.mu.Unlock()
	n := 0
	for _, a := range agents {
		a.mu.Lock()
		n += len(a.svids)
		a.mu.Unlock()
	}
	return n
}

// SyncedSince returns how many agents made a successful sync that started
// at or after since, and how many agents there are.
func (f *Fleet) SyncedSince(since time.Time) (synced, total int) {
	f.mu.Lock()
	agents := f.agents
	f.mu.Unlock()
	for _, a := range agents {
		a.mu.Lock()
		if !a.lastOK.Before(since) {
			synced++
		}
		a.mu.Unlock()
	}
	return synced, len(agents)
}

// Collect returns the latencies of the syncs that started after the last
// call and have finished, the number of those that failed and the last
// failure. A sync in flight across a call is dropped, so that what came
// before a window (growing the fleet, a pause) does not leak into it.
func (f *Fleet) Collect() (lat []time.Duration, failed int, lastErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lat, failed, lastErr = f.lat, f.failed, f.lastErr
	f.lat, f.failed, f.lastErr = nil, 0, nil
	f.since = time.Now()
	return lat, failed, lastErr
}

// Close stops every sync loop and closes the connections.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.agents {
		a.conn.Close()
	}
	f.agents = nil
}

func (f *Fleet) loop(a *agent) {
	defer f.wg.Done()
	t := time.NewTimer(mrand.N(f.interval))
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
		err := a.sync(ctx, f.srv.Bundle)
		cancel()
		d := time.Since(start)
		if f.ctx.Err() != nil {
			return
		}
		f.record(start, d, err)
		if err == nil {
			a.mu.Lock()
			a.lastOK = start
			a.mu.Unlock()
		}
		t.Reset(max(0, f.interval-d))
	}
}

// record keeps the outcome of a sync that started at start, unless it
// started before the last Collect.
func (f *Fleet) record(start time.Time, d time.Duration, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case start.Before(f.since):
	case err != nil:
		f.failed++
		f.lastErr = err
	default:
		f.lat = append(f.lat, d)
	}
}

// sync does what a SPIRE agent's sync does: fetch the bundle, fetch the
// authorized entries, and sign SVIDs for entries it holds none for.
func (a *agent) sync(ctx context.Context, bundle *x509bundle.Bundle) error {
	if _, err := bundlev1.NewBundleClient(a.conn).GetBundle(ctx, &bundlev1.GetBundleRequest{}); err != nil {
		return fmt.Errorf("fleet: get bundle: %w", err)
	}
	ids, err := a.entries(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	var params []*svidv1.NewX509SVIDParams
	for _, id := range ids {
		if !a.svids[id] {
			params = append(params, &svidv1.NewX509SVIDParams{EntryId: id, Csr: a.csr})
		}
	}
	a.mu.Unlock()
	if len(params) == 0 {
		return nil
	}
	resp, err := svidv1.NewSVIDClient(a.conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
	if err != nil {
		return fmt.Errorf("fleet: batch new X509-SVID: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, r := range resp.Results {
		if c := codes.Code(r.Status.GetCode()); c != codes.OK || r.Svid == nil {
			return fmt.Errorf("fleet: sign %s: %s: %s", params[i].EntryId, c, r.Status.GetMessage())
		}
		if _, err := verify(r.Svid.CertChain, bundle, a.key); err != nil {
			return err
		}
		a.svids[params[i].EntryId] = true
	}
	return nil
}

// entries runs SyncAuthorizedEntries as SPIRE's agent does: full entries
// when the server sends them, otherwise revisions first and then the
// entries this agent has not seen, a page at a time.
func (a *agent) entries(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := entryv1.NewEntryClient(a.conn).SyncAuthorizedEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: sync authorized entries: %w", err)
	}
	mask := &types.EntryMask{SpiffeId: true, Selectors: true, RevisionNumber: true, CreatedAt: true}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{OutputMask: mask}); err != nil {
		return nil, fmt.Errorf("fleet: sync authorized entries: %w", err)
	}
	var ids, need []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("fleet: sync authorized entries: %w", err)
		}
		for _, e := range resp.Entries {
			ids = append(ids, e.Id)
		}
		for _, r := range resp.EntryRevisions {
			ids = append(ids, r.Id)
			a.mu.Lock()
			if !a.svids[r.Id] {
				need = append(need, r.Id)
			}
			a.mu.Unlock()
		}
		if !resp.More {
			break
		}
	}
	if len(need) > 0 {
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: need}); err != nil {
			return nil, fmt.Errorf("fleet: sync authorized entries: %w", err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return nil, fmt.Errorf("fleet: sync authorized entries: %w", err)
			}
			if !resp.More {
				break
			}
		}
	}
	return ids, nil
}

// dial connects to the server's agent API, authenticating the server by
// its SPIFFE ID and presenting svid when not nil.
func dial(srv Server, svid *x509svid.SVID) (*grpc.ClientConn, error) {
	serverID, err := spiffeid.FromPath(srv.Bundle.TrustDomain(), "/spire/server")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	cfg := tlsconfig.TLSClientConfig(srv.Bundle, tlsconfig.AuthorizeID(serverID))
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, srv.Bundle, tlsconfig.AuthorizeID(serverID))
	}
	// Thousands of mostly idle connections: a small read buffer keeps
	// the simulator's memory from growing with the fleet.
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithReadBufferSize(8 << 10)}
	target := srv.Addr
	if len(srv.Addrs) > 0 {
		// A resolver of this connection's own stands for a DNS name
		// with an address per server.
		r := manual.NewBuilderWithScheme("fleet")
		var addrs []resolver.Address
		for _, a := range srv.Addrs {
			addrs = append(addrs, resolver.Address{Addr: a})
		}
		r.InitialState(resolver.State{Addresses: addrs})
		target = "fleet:///servers"
		opts = append(opts, grpc.WithResolvers(r),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: dial %s: %w", target, err)
	}
	return conn, nil
}

// AttestJoinToken runs join-token node attestation over conn (TLS, no
// client certificate) and returns the agent SVID, verified against bundle.
func AttestJoinToken(ctx context.Context, conn *grpc.ClientConn, bundle *x509bundle.Bundle, token string, key crypto.Signer, csr []byte) (*x509svid.SVID, error) {
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: attest: %w", err)
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		return nil, fmt.Errorf("fleet: attest: %w", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("fleet: attest: %w", err)
	}
	res := resp.GetResult()
	if res == nil || res.Svid == nil {
		return nil, errors.New("fleet: attest: join token answered with a challenge")
	}
	stream.CloseSend()
	return verify(res.Svid.CertChain, bundle, key)
}

// verify parses a DER chain and verifies it with go-spiffe.
func verify(chain [][]byte, bundle *x509bundle.Bundle, key crypto.Signer) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("fleet: parse SVID: %w", err)
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, bundle)
	if err != nil {
		return nil, fmt.Errorf("fleet: verify SVID: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}
