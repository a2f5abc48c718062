// Package manager is the agent's core: it attests the node (or reuses the
// SVID a previous run stored), keeps the agent X509-SVID renewed, syncs the
// entries the agent is authorized for, obtains and rotates their SVIDs, and
// persists all of it so that a restarted agent serves workloads before it
// reaches the server. The Workload API reads it through the methods of
// workloadapi.Manager.
package manager

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/client"
	"github.com/spiffe-hw/spire-hw/agent/keymanager"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe-hw/spire-hw/internal/backoff"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultSyncInterval is how often entries and bundles are synced.
const DefaultSyncInterval = 5 * time.Second

var (
	// ErrAgentEvicted means the server no longer knows the agent (deleted
	// or banned) and it cannot re-attest: an operator must act (a new join
	// token, or lifting the ban).
	ErrAgentEvicted = errors.New("manager: agent evicted by the server")
	// ErrAgentSVIDExpired means the agent SVID expired (for instance while
	// the server was unreachable) and the attestation method cannot
	// re-attest.
	ErrAgentSVIDExpired = errors.New("manager: agent SVID expired and the agent cannot re-attest")
	// ErrAttestationRejected means the server refused node attestation, or
	// the attestor could not produce evidence; retrying will not help.
	ErrAttestationRejected = errors.New("manager: node attestation rejected")
)

// Config configures a Manager.
type Config struct {
	// TrustDomain is the agent's trust domain.
	TrustDomain spiffeid.TrustDomain
	// ServerAddress is the server's host:port.
	ServerAddress string
	// DataDir holds the agent SVID, the bundle and the SVID cache.
	DataDir string
	// TrustBundle verifies the server on the first attestation.
	TrustBundle []*x509.Certificate
	// InsecureBootstrap skips server verification on the first attestation.
	InsecureBootstrap bool
	// BootstrapBundle, when set, is asked for the bootstrap bundle when the
	// agent has none (the first attestation; trust_bundle_url), and again
	// when it rebootstraps. TrustBundle is then not used.
	BootstrapBundle BootstrapFunc
	// BootstrapOnce makes Run give up when its first round fails (no
	// attestation or sync has succeeded yet), as SPIRE does with
	// retry_bootstrap = false; otherwise it retries with backoff.
	BootstrapOnce bool
	// RebootstrapMode is RebootstrapNever (the default, also for ""),
	// RebootstrapAuto or RebootstrapAlways; see maybeRebootstrap.
	RebootstrapMode string
	// RebootstrapDelay is how long the server must stay untrusted before
	// the agent rebootstraps; zero means DefaultRebootstrapDelay.
	RebootstrapDelay time.Duration
	// NodeAttestor provides the node's evidence.
	NodeAttestor nodeattestor.Attestor
	// KeyManager holds the agent key; use the disk one to survive restarts
	// without re-attesting.
	KeyManager keymanager.KeyManager
	// SVIDStores are the stores, by name, that entries marked store_svid
	// name in their selectors; their SVIDs go there instead of to
	// workloads.
	SVIDStores map[string]svidstore.Store
	// SyncInterval is the time between syncs; zero means DefaultSyncInterval.
	// Against our server the agent also syncs at once on each change
	// notice (wire/push); the interval then is the safety net.
	SyncInterval time.Duration
	// DisableNotices keeps the agent polling only, as against SPIRE's
	// server (benchmarks compare the two).
	DisableNotices bool
	// X509SVIDCacheMaxSize is SPIRE's x509_svid_cache_max_size: the most
	// X.509-SVIDs the agent holds for workloads; zero means
	// DefaultSVIDCacheMaxSize. Beyond it, SVIDs are minted when a workload
	// asks and the least recently asked for are evicted, never one a
	// connected workload holds (see limitSVIDs).
	X509SVIDCacheMaxSize int
	// JWTSVIDCacheMaxSize is SPIRE's jwt_svid_cache_max_size: the most
	// JWT-SVIDs cached; zero means DefaultSVIDCacheMaxSize. The least
	// recently used is dropped first.
	JWTSVIDCacheMaxSize int
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// Log receives the manager's events; nil discards them.
	Log *slog.Logger
	// Metrics gets SPIRE's agent metrics: node.attestor.new_svid,
	// agent_svid.rotate, manager.sync, agent_key_manager (KeyManager is
	// wrapped with keymanager.WithMetrics), the cache_manager ones and the
	// cache's lru_cache ones; nil drops them.
	Metrics *telemetry.Metrics
}

// Manager runs the agent's core loop and answers the Workload API.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	clock  func() time.Time
	client *client.Client
	cache  *cache.Cache
	store  *store
	// stored holds the entries whose SVIDs go to SVIDStores; the run loop
	// records them and Run's pusher goroutine pushes them.
	stored *storedSVIDs

	// mu guards the fields below, which the run loop changes and the
	// persistence code reads.
	mu           sync.Mutex
	agentSVID    *x509svid.SVID
	reattestable bool
	bundles      map[string]*types.Bundle // own and federated, as received
	// bundleSet says the client has a bundle to verify the server with.
	bundleSet bool
	// lastContact is when a round with the server last succeeded (at
	// first, when the manager was made), for Ready.
	lastContact time.Time
	// lastSync is when a round with the server last succeeded, zero
	// before the first (debug/v1's last_sync_success).
	lastSync time.Time

	// rebootstrap is the mode in force (auto may turn it off), and
	// untrustedSince when the server was first seen untrusted; both
	// belong to the run loop.
	rebootstrap    string
	untrustedSince time.Time

	jwts *jwtCache

	// roundsStarted and roundsEnded count the rounds of the run loop
	// (successful or not), so that a workload waiting for an SVID minted
	// on demand knows when a round that started after it asked is over
	// (see SubscribeToCacheChanges).
	roundMu       sync.Mutex
	roundsStarted uint64
	roundsEnded   uint64
	roundDone     chan struct{} // closed and replaced at the end of each round

	randMu sync.Mutex
	rnd    *rand.Rand

	// notices wakes the run loop for a change notice (see noticed).
	notices chan struct{}
	// svidsWanted wakes it to mint the SVIDs a waiting workload lacks
	// (see wantSVIDs).
	svidsWanted chan struct{}

	// taintRenewedAt is when the run loop last renewed the agent SVID
	// because it chained to a tainted authority; only Run uses it.
	taintRenewedAt time.Time
	// taintedX509Seen (by DER) and taintedJWTSeen (by key ID) are the
	// tainted authorities processTainted has handled; only the run loop
	// uses them.
	taintedX509Seen map[string]struct{}
	taintedJWTSeen  map[string]struct{}

	// memory returns the heap's idle pages after large cache changes
	// (memory.go); nil does nothing.
	memory *memoryReleaser

	// bootstrapped is closed by the first round of Run that succeeds
	// (once, even if Run is called again).
	bootstrapped     chan struct{}
	bootstrappedOnce sync.Once
}

// New loads the persisted state from DataDir and returns a Manager that
// already serves the SVIDs and bundle found there, before Run contacts the
// server. Close releases the data directory.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("manager: trust domain is required")
	case cfg.DataDir == "":
		return nil, errors.New("manager: data dir is required")
	case cfg.NodeAttestor == nil:
		return nil, errors.New("manager: node attestor is required")
	case cfg.KeyManager == nil:
		return nil, errors.New("manager: key manager is required")
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.X509SVIDCacheMaxSize <= 0 {
		cfg.X509SVIDCacheMaxSize = DefaultSVIDCacheMaxSize
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.RebootstrapMode == "" {
		cfg.RebootstrapMode = RebootstrapNever
	}
	if cfg.RebootstrapDelay <= 0 {
		cfg.RebootstrapDelay = DefaultRebootstrapDelay
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.KeyManager = keymanager.WithMetrics(cfg.KeyManager, cfg.Metrics)
	cl, err := client.New(client.Config{
		ServerAddress:     cfg.ServerAddress,
		TrustDomain:       cfg.TrustDomain,
		TrustBundle:       cfg.TrustBundle,
		InsecureBootstrap: cfg.InsecureBootstrap,
		Log:               log,
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	st, err := openStore(cfg.DataDir, log)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:          cfg,
		log:          log,
		clock:        cfg.Clock,
		client:       cl,
		cache:        cache.New(cfg.TrustDomain, cfg.Clock, cfg.Metrics),
		store:        st,
		stored:       newStoredSVIDs(cfg.SVIDStores, cfg.TrustDomain, log),
		bundles:      map[string]*types.Bundle{},
		jwts:         newJWTCache(cfg.JWTSVIDCacheMaxSize),
		roundDone:    make(chan struct{}),
		rnd:          rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		notices:      make(chan struct{}, 1),
		svidsWanted:  make(chan struct{}, 1),
		memory:       newMemoryReleaser(),
		bootstrapped: make(chan struct{}),

		lastContact: cfg.Clock(),
		rebootstrap: cfg.RebootstrapMode,
	}
	if cfg.BootstrapBundle == nil && len(cfg.TrustBundle) > 0 {
		m.bundleSet = true // the client verifies first contact with it
	}
	m.loadState()
	return m, nil
}

// Close releases the data directory. Call it after Run has returned (Run
// has then stopped its SVIDStore pusher).
func (m *Manager) Close() error {
	err := m.client.Close()
	return errors.Join(err, m.store.close())
}

// loadState fills the cache and the client from the data directory.
// Anything missing or unreadable is logged and left for the server to
// provide.
func (m *Manager) loadState() {
	st, problems := m.store.load()
	for _, p := range problems {
		m.log.Warn("Ignoring unreadable cache record", "error", p)
	}
	m.reattestable = st.reattestable
	m.bundles = st.bundles
	if b, ok := st.bundles[m.cfg.TrustDomain.Name()]; ok {
		sb, err := client.ParseBundle(m.cfg.TrustDomain, b)
		if err != nil {
			m.log.Warn("Ignoring stored bundle", "error", err)
		} else {
			m.cache.SetBundle(sb)
			m.setClientBundle(sb.X509Bundle())
		}
	}
	fed := map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
	for name, b := range st.bundles {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil || td == m.cfg.TrustDomain {
			continue
		}
		if sb, err := client.ParseBundle(td, b); err == nil {
			fed[td] = sb
		}
	}
	m.cache.SetFederatedBundles(fed)
	// A data directory written before store_svid entries were kept apart
	// may hold some; they must not reach workloads.
	served, _ := splitStored(st.entries)
	m.cache.SetEntries(served)
	svids := map[string]cache.Identity{}
	for id, sv := range st.svids {
		e, ok := m.cache.Entry(id)
		if !ok {
			continue
		}
		issued := e
		if e.RevisionNumber != sv.revision {
			issued = &types.Entry{Id: id, RevisionNumber: sv.revision}
		}
		svids[id] = cache.Identity{Entry: issued, SVID: sv.svid}
	}
	m.cache.SetSVIDs(svids)

	chain, authorities, err := m.store.loadAgentSVID()
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		m.log.Warn("Ignoring stored agent SVID", "error", err)
		return
	}
	if m.cache.Bundle() == nil && len(authorities) > 0 {
		m.setClientBundle(x509bundle.FromX509Authorities(m.cfg.TrustDomain, authorities))
	}
	key, err := agentKeyFor(context.Background(), m.cfg.KeyManager, chain[0].PublicKey)
	if errors.Is(err, keymanager.ErrAgentKeyNotHere) {
		// A copied data_dir or a cloned image on another TPM: this node is
		// not the agent that cached these SVIDs (their keys were copied
		// with them), so its workloads must not get them. It attests as
		// the node it is, and syncs what that node is entitled to.
		m.log.Warn("Stored agent key cannot be used on this node; dropping the stored agent SVID and the workload SVIDs cached under it, the agent will attest", "error", err)
		m.cache.SetEntries(nil)
		return
	}
	if err != nil {
		m.log.Info("Stored agent SVID has no key; the agent will attest", "error", err)
		return
	}
	svid, err := m.checkAgentSVID(chain, key, authorities)
	if err != nil {
		m.log.Warn("Ignoring stored agent SVID", "error", err)
		return
	}
	m.agentSVID = svid
	m.client.SetSVID(svid)
}

// agentKeyFor returns the key of the stored agent SVID. A key manager that
// keeps more than one candidate (an external plugin's agent-svid-A and -B,
// as SPIRE keeps them) is asked for the one with the SVID's public key, the
// way SPIRE's agent matches its stored SVID to the plugin's keys.
func agentKeyFor(ctx context.Context, km keymanager.KeyManager, pub crypto.PublicKey) (crypto.Signer, error) {
	if f, ok := km.(interface {
		AgentKeyFor(context.Context, crypto.PublicKey) (crypto.Signer, error)
	}); ok {
		return f.AgentKeyFor(ctx, pub)
	}
	return km.AgentKey(ctx)
}

// checkAgentSVID verifies an agent chain against the trust domain's
// authorities and its key.
func (m *Manager) checkAgentSVID(chain []*x509.Certificate, key crypto.Signer, authorities []*x509.Certificate) (*x509svid.SVID, error) {
	if b := m.cache.Bundle(); b != nil {
		authorities = b.X509Authorities()
	}
	bundle := x509bundle.FromX509Authorities(m.cfg.TrustDomain, authorities)
	// Expiry is not checked here: an expired SVID is still the agent's
	// identity, and the run loop decides whether to re-attest.
	leaf := chain[0]
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2)))
	if err != nil {
		return nil, fmt.Errorf("manager: agent SVID: %w", err)
	}
	if id.TrustDomain() != m.cfg.TrustDomain {
		return nil, fmt.Errorf("manager: agent SVID %q is not in trust domain %q", id, m.cfg.TrustDomain)
	}
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("manager: agent SVID does not match the agent key")
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// AgentSVID returns the agent's current X509-SVID, or nil before
// attestation.
func (m *Manager) AgentSVID() *x509svid.SVID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agentSVID
}

// Cache returns the cache the manager fills (read-only use).
func (m *Manager) Cache() *cache.Cache { return m.cache }

// SubscribeToCacheChanges implements workloadapi.Manager. When an entry
// the workload matches has no SVID (beyond X509SVIDCacheMaxSize, SVIDs are
// minted on demand), it wakes the run loop and waits, as SPIRE's agent
// does, until the SVIDs are there or one round has tried to mint them: a
// round that could not (server unreachable, entry refused) lets the
// workload have what there is instead of holding it forever.
func (m *Manager) SubscribeToCacheChanges(ctx context.Context, selectors []*types.Selector) (cache.Subscription, error) {
	if m.cache.Missing(selectors) {
		release := m.cache.Want(selectors)
		defer release()
		m.roundMu.Lock()
		started, done := m.roundsStarted, m.roundDone
		m.roundMu.Unlock()
		m.wantSVIDs()
		for m.cache.Missing(selectors) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-done:
			}
			m.roundMu.Lock()
			tried := m.roundsEnded > started
			done = m.roundDone
			m.roundMu.Unlock()
			if tried {
				break
			}
		}
	}
	return m.cache.Subscribe(ctx, selectors), nil
}

// beginRound and endRound bracket each round of the run loop, for the
// workloads waiting for one (SubscribeToCacheChanges).
func (m *Manager) beginRound() {
	m.roundMu.Lock()
	m.roundsStarted++
	m.roundMu.Unlock()
}

func (m *Manager) endRound() {
	m.roundMu.Lock()
	m.roundsEnded = m.roundsStarted
	close(m.roundDone)
	m.roundDone = make(chan struct{})
	m.roundMu.Unlock()
}

// FetchWorkloadUpdate implements workloadapi.Manager.
func (m *Manager) FetchWorkloadUpdate(selectors []*types.Selector) *cache.WorkloadUpdate {
	return m.cache.FetchWorkloadUpdate(selectors)
}

func (m *Manager) jitter() float64 {
	m.randMu.Lock()
	defer m.randMu.Unlock()
	return m.rnd.Float64()
}

// Run attests (unless a valid stored SVID exists), then syncs every
// SyncInterval and renews the agent SVID at half-life until ctx is done.
// While the server is unreachable it retries with capped, jittered backoff
// and keeps serving what it has. It returns nil when ctx is done, or an
// error the agent cannot recover from by itself: ErrAgentEvicted,
// ErrAgentSVIDExpired, ErrAttestationRejected (each wrapped with its cause).
// SVIDStores are pushed on a goroutine of their own, and change notices
// watched on another (see watchNotices); Run stops both and waits for
// them before it returns.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { m.stored.run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	if err := m.checkRebootstrapSupport(); err != nil {
		return err
	}
	failures := 0
	renewAt := time.Time{}
	// bootstrapped is set by the first round that succeeds.
	bootstrapped := false
	// pollAt is when the poll is due; noticed says a notice, not the
	// poll, started this round (see nextPoll).
	var pollAt time.Time
	noticed := false
	for {
		m.beginRound()
		wait, err := m.step(ctx, &renewAt)
		m.endRound()
		if err != nil && ctx.Err() == nil {
			err = m.maybeRebootstrap(ctx, err)
			if err == nil {
				renewAt = time.Time{}
				continue
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && isFatal(err):
			return err
		case err != nil && !bootstrapped && m.cfg.BootstrapOnce:
			return fmt.Errorf("manager: bootstrap failed and retry_bootstrap is false: %w", err)
		case err != nil:
			failures++
			wait = backoff.Delay(failures, m.jitter())
			m.log.Warn("Server unreachable or call failed; retrying", "error", err, "retry_in", wait)
		default:
			failures = 0
			if !bootstrapped && !m.cfg.DisableNotices {
				// Attested and synced: the notice stream has an SVID
				// to open with.
				wg.Go(func() { m.watchNotices(ctx) })
			}
			if !bootstrapped {
				m.bootstrappedOnce.Do(func() { close(m.bootstrapped) })
			}
			bootstrapped = true
			m.untrustedSince = time.Time{}
			m.mu.Lock()
			m.lastContact = m.clock()
			m.lastSync = m.lastContact
			m.mu.Unlock()
			now := time.Now()
			if noticed && !pollAt.IsZero() {
				pollAt = nextPoll(pollAt, now, m.cfg.SyncInterval)
				wait = min(wait, pollAt.Sub(now))
			} else {
				pollAt = now.Add(wait)
			}
		}
		ok, n := m.waitOrNotice(ctx, wait)
		if !ok {
			return nil
		}
		noticed = n
	}
}

// Bootstrapped is closed once Run has attested (or resumed from the data
// directory) and completed its first sync with the server.
func (m *Manager) Bootstrapped() <-chan struct{} { return m.bootstrapped }

func isFatal(err error) bool {
	return errors.Is(err, ErrAgentEvicted) || errors.Is(err, ErrAgentSVIDExpired) || errors.Is(err, ErrAttestationRejected) ||
		errors.Is(err, ErrRebootstrapUnsupported)
}

// freshRenewAt is when to renew the agent SVID that attestation or a
// renewal has just obtained (see freshRenewTime).
func (m *Manager) freshRenewAt() time.Time {
	leaf := m.AgentSVID().Certificates[0]
	return freshRenewTime(leaf.NotBefore, leaf.NotAfter, m.clock(), m.jitter())
}

// step does one round of work and returns how long to wait before the
// next one.
func (m *Manager) step(ctx context.Context, renewAt *time.Time) (time.Duration, error) {
	now := m.clock()
	svid := m.AgentSVID()
	if svid == nil || !now.Before(svid.Certificates[0].NotAfter) {
		if svid != nil && !m.canReattest() {
			return 0, fmt.Errorf("%w (expired %s)", ErrAgentSVIDExpired, svid.Certificates[0].NotAfter.Format(time.RFC3339))
		}
		if err := m.attest(ctx); err != nil {
			return 0, err
		}
		*renewAt = m.freshRenewAt()
	}
	if renewAt.IsZero() {
		leaf := svid.Certificates[0]
		*renewAt = renewTime(leaf.NotBefore, leaf.NotAfter, m.jitter())
	}
	if !now.Before(*renewAt) {
		// A node that can prove itself again (TPM, cloud) re-attests
		// instead of renewing, as SPIRE's agent does: the server then sees
		// fresh evidence (a new quote), so selectors naming the machine's
		// state follow it.
		// A refusal while the current SVID is valid is retried with
		// backoff rather than fatal; once the SVID expires, the attestation
		// above decides.
		if m.canReattest() {
			if err := m.attest(ctx); err != nil {
				return 0, fmt.Errorf("manager: re-attest at half-life: %v", err)
			}
		} else if err := m.renew(ctx); err != nil {
			return 0, m.classify(ctx, err)
		}
		*renewAt = m.freshRenewAt()
	}
	if err := m.sync(ctx); err != nil {
		return 0, m.classify(ctx, err)
	}
	if svid := m.AgentSVID(); svid != nil && m.clock().Sub(m.taintRenewedAt) >= m.cfg.SyncInterval && m.tainted().chainTainted(svid.Certificates) {
		// The agent's own SVID is replaced at once too, as SPIRE's
		// rotator does; the server still trusts the tainted authority
		// until it is revoked, so renewing with it works.
		m.log.Info("Agent SVID chains to a tainted X.509 authority; renewing it now")
		// At most once a sync interval: a server that kept signing
		// with the tainted authority must not put the agent in a loop.
		m.taintRenewedAt = m.clock()
		*renewAt = m.taintRenewedAt
		return 0, nil
	}
	wait := m.cfg.SyncInterval
	if !renewAt.IsZero() {
		wait = min(wait, max(renewAt.Sub(m.clock()), 0))
	}
	return wait, nil
}

func (m *Manager) canReattest() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reattestable
}

// classify turns a server refusal of the agent's identity into either a
// re-attestation (when possible) or ErrAgentEvicted.
func (m *Manager) classify(ctx context.Context, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.NotFound, codes.Unauthenticated:
	default:
		return err
	}
	if !m.canReattest() {
		return fmt.Errorf("%w: %w", ErrAgentEvicted, err)
	}
	m.log.Warn("Server refused the agent SVID; re-attesting", "error", err)
	if aerr := m.attest(ctx); aerr != nil {
		return aerr
	}
	return nil
}

// attest runs node attestation and installs the new agent SVID.
func (m *Manager) attest(ctx context.Context) (err error) {
	defer m.cfg.Metrics.StartCall("node", "attestor", "new_svid").Done(&err)
	key, err := m.cfg.KeyManager.GenerateKey(ctx)
	if err != nil {
		return fmt.Errorf("manager: attest: %w", err)
	}
	csr, err := newCSR(key, spiffeid.ID{})
	if err != nil {
		return err
	}
	if err := m.ensureBootstrapBundle(ctx); err != nil {
		return err
	}
	res, err := m.client.Attest(ctx, m.cfg.NodeAttestor, csr)
	if err != nil {
		// Transport trouble is retried; a refusal by the server, or an
		// attestor that cannot produce evidence (not a gRPC status), is not.
		if _, isStatus := status.FromError(err); isStatus {
			switch status.Code(err) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted, codes.Unknown:
				return fmt.Errorf("manager: attest: %w", err)
			}
		}
		return fmt.Errorf("%w: %w", ErrAttestationRejected, err)
	}
	sb, err := client.ParseBundle(m.cfg.TrustDomain, res.Bundle)
	if err != nil {
		return fmt.Errorf("manager: attest: bundle: %w", err)
	}
	m.cache.SetBundle(sb)
	m.setClientBundle(sb.X509Bundle())
	svid, err := m.checkAgentSVID(res.SVID, key, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAttestationRejected, err)
	}
	if err := m.installAgentSVID(ctx, svid); err != nil {
		return err
	}
	m.mu.Lock()
	m.reattestable = res.Reattestable
	m.bundles[m.cfg.TrustDomain.Name()] = res.Bundle
	m.mu.Unlock()
	m.log.Info("Node attestation succeeded", "spiffe_id", svid.ID.String(), "reattestable", res.Reattestable, "expires_at", svid.Certificates[0].NotAfter)
	if err := m.persist(); err != nil {
		return err
	}
	return m.checkRebootstrapSupport()
}

// renew gets a new agent SVID for a new key.
func (m *Manager) renew(ctx context.Context) (err error) {
	defer m.cfg.Metrics.StartCall("agent_svid", "rotate").Done(&err)
	key, err := m.cfg.KeyManager.GenerateKey(ctx)
	if err != nil {
		return fmt.Errorf("manager: renew: %w", err)
	}
	csr, err := newCSR(key, spiffeid.ID{})
	if err != nil {
		return err
	}
	chain, err := m.client.RenewAgent(ctx, csr)
	if err != nil {
		return fmt.Errorf("manager: renew: %w", err)
	}
	svid, err := m.checkAgentSVID(chain, key, nil)
	if err != nil {
		return fmt.Errorf("manager: renew: %w", err)
	}
	if err := m.installAgentSVID(ctx, svid); err != nil {
		return err
	}
	m.log.Info("Renewed agent SVID", "spiffe_id", svid.ID.String(), "expires_at", svid.Certificates[0].NotAfter)
	return nil
}

// installAgentSVID persists the SVID and its key, then uses it.
func (m *Manager) installAgentSVID(ctx context.Context, svid *x509svid.SVID) error {
	var authorities []*x509.Certificate
	if b := m.cache.Bundle(); b != nil {
		authorities = b.X509Authorities()
	}
	if err := m.store.saveAgentSVID(svid.Certificates, authorities); err != nil {
		return err
	}
	if err := m.cfg.KeyManager.SetAgentKey(ctx, svid.PrivateKey); err != nil {
		return fmt.Errorf("manager: store agent key: %w", err)
	}
	m.mu.Lock()
	m.agentSVID = svid
	m.mu.Unlock()
	m.client.SetSVID(svid)
	return nil
}

// persist writes the cache to the data directory.
func (m *Manager) persist() error {
	st := &state{svids: map[string]storedSVID{}, bundles: map[string]*types.Bundle{}}
	for id, s := range m.cache.SVIDs() {
		st.svids[id] = storedSVID{revision: s.Entry.GetRevisionNumber(), svid: s.SVID}
	}
	// Only the entries that hold an SVID: they are what a restart serves
	// before the server answers, and an entry without one is of no use
	// until the server is back, when the sync fetches it again. Beyond
	// x509_svid_cache_max_size that is most of them: 50,000 entries
	// rewritten on every change held 27 MiB of bbolt pages alone.
	for _, e := range m.cache.Entries() {
		if _, ok := st.svids[e.Id]; ok {
			st.entries = append(st.entries, e)
		}
	}
	m.mu.Lock()
	for td, b := range m.bundles {
		st.bundles[td] = b
	}
	st.reattestable = m.reattestable
	m.mu.Unlock()
	return m.store.save(st)
}
