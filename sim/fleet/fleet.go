// Package fleet simulates many SPIRE agents in one process, for fleet-scale
// benchmarks of a server (ours or upstream SPIRE) without a process per
// agent. Each simulated agent is a real identity: it attests with a join
// token over the server API, holds its own agent SVID and mTLS connection,
// and runs the sync loop a real agent runs every interval (GetBundle,
// SyncAuthorizedEntries, BatchNewX509SVID for entries it holds no SVID
// for). The fleet records how long each sync takes.
//
// With WithPush, each agent also holds our server's change-notice stream
// (wire/push) open, as our agent does, and syncs at once on a notice, so
// that a benchmark can weigh what the streams of an idle fleet cost the
// server.
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
	"sync/atomic"
	"time"

	"github.com/spiffe-hw/spire-hw/internal/backoff"
	"github.com/spiffe-hw/spire-hw/wire/push"
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
	"google.golang.org/grpc/status"
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
	push     bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// The notice streams' counters (see PushStats).
	opened, open, notices, noticeSyncs atomic.Int64

	mu      sync.Mutex
	agents  []*agent
	byID    map[spiffeid.ID]*agent
	lat     []time.Duration
	failed  int
	lastErr error
	// since is when Collect was last called: a sync that started before
	// it belongs to no window and is not recorded.
	since time.Time
}

// Option changes how a fleet's agents behave.
type Option func(*Fleet)

// WithPush makes every agent open a change-notice stream (wire/push)
// once it has attested, and sync at once on each notice it receives,
// the Open that starts a stream included (the sync that closes the gap
// between the agent's last sync and the subscription). The poll goes on
// at the interval, as our agent's does. A stream that ends is reopened
// after a jittered exponential backoff; against a server without the
// service (SPIRE's) the agent asks again only every ten minutes.
func WithPush() Option { return func(f *Fleet) { f.push = true } }

// New returns an empty fleet whose agents sync every interval (0 means
// DefaultSyncInterval).
func New(srv Server, interval time.Duration, opts ...Option) *Fleet {
	if interval <= 0 {
		interval = DefaultSyncInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{srv: srv, interval: interval, ctx: ctx, cancel: cancel, byID: map[spiffeid.ID]*agent{}}
	for _, o := range opts {
		o(f)
	}
	return f
}

// agent is one simulated agent.
type agent struct {
	id   spiffeid.ID
	conn *grpc.ClientConn
	key  crypto.Signer
	csr  []byte

	// notice, with push on, holds a notice the sync loop has not yet
	// acted on; notices that arrive before it syncs are one.
	notice chan struct{}

	mu    sync.Mutex
	svids map[string]bool // entry IDs it holds an SVID for
	// lastOK is when the agent's last successful sync started.
	lastOK time.Time
}

// Add attests a new agent with token and starts its sync loop at a random
// phase of the interval, as agents started over time would be, and with
// push on its notice stream. It returns the agent's SPIFFE ID, to parent
// its entries to.
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
	if f.push {
		a.notice = make(chan struct{}, 1)
	}
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.byID[a.id] = a
	f.mu.Unlock()
	f.wg.Add(1)
	go f.loop(a)
	if f.push {
		f.wg.Add(1)
		go f.watch(a)
	}
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

// Holds reports whether the agent id holds an SVID for the entry entryID.
func (f *Fleet) Holds(id spiffeid.ID, entryID string) bool {
	f.mu.Lock()
	a := f.byID[id]
	f.mu.Unlock()
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.svids[entryID]
}

// PushStats counts what the fleet's notice streams did since the fleet
// was made; all zero with push off.
type PushStats struct {
	// Opened counts the streams the server opened (its Open notice
	// received), reopenings included.
	Opened int64
	// Open is the number of streams open now.
	Open int64
	// Notices counts the change notices received, Open not included.
	Notices int64
	// NoticeSyncs counts the syncs a notice started, Open's included;
	// fewer than the notices when several came in before one sync.
	NoticeSyncs int64
}

// PushStats returns the notice streams' counters.
func (f *Fleet) PushStats() PushStats {
	return PushStats{Opened: f.opened.Load(), Open: f.open.Load(), Notices: f.notices.Load(), NoticeSyncs: f.noticeSyncs.Load()}
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
	f.agents, f.byID = nil, map[spiffeid.ID]*agent{}
}

func (f *Fleet) loop(a *agent) {
	defer f.wg.Done()
	// due is when the poll is due. A sync that a notice starts leaves it
	// where it is, as our agent does (agent/manager's nextPoll), unless
	// it is within half an interval, when the next one is due instead.
	due := time.Now().Add(mrand.N(f.interval))
	t := time.NewTimer(time.Until(due))
	defer t.Stop()
	for {
		noticed := false
		// a.notice is nil with push off: only the poll wakes the loop.
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		case <-a.notice:
			f.noticeSyncs.Add(1)
			noticed = true
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
		now := time.Now()
		if noticed {
			for due.Sub(now) < f.interval/2 {
				due = due.Add(f.interval)
			}
		} else {
			due = start.Add(f.interval)
		}
		t.Reset(max(0, due.Sub(now)))
	}
}

const (
	// pushRetryUnsupported is how long an agent whose server has no
	// notice service waits before asking again, as our agent does.
	pushRetryUnsupported = 10 * time.Minute
)

// watch keeps a's notice stream open until the fleet closes.
func (f *Fleet) watch(a *agent) {
	defer f.wg.Done()
	failures := 0
	for {
		opened, err := f.subscribe(a)
		if f.ctx.Err() != nil {
			return
		}
		if opened {
			failures = 0
		}
		failures++
		wait := reopenDelay(failures)
		if status.Code(err) == codes.Unimplemented {
			wait = pushRetryUnsupported
		}
		t := time.NewTimer(wait)
		select {
		case <-f.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// subscribe holds one notice stream of a's until it ends, telling a's
// sync loop of every notice; opened says whether the server opened it.
func (f *Fleet) subscribe(a *agent) (opened bool, err error) {
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	st, err := push.Subscribe(ctx, a.conn)
	if err != nil {
		return false, err
	}
	defer func() {
		if opened {
			f.open.Add(-1)
		}
	}()
	for {
		if _, err := st.Recv(); err != nil {
			return opened, err
		}
		// The first notice of a stream is Open.
		if !opened {
			opened = true
			f.opened.Add(1)
			f.open.Add(1)
		} else {
			f.notices.Add(1)
		}
		select {
		case a.notice <- struct{}{}:
		default:
		}
	}
}

// reopenDelay is the wait after the n-th consecutive stream failure: our
// agent's retry schedule, jittered afresh for each agent so that the
// streams of a fleet cut together (a server restart) are not reopened in
// step.
func reopenDelay(n int) time.Duration { return backoff.Delay(n, mrand.Float64()) }

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
