package federation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Refresher refreshes a trust domain's bundle from its relationship's
// endpoint now. It reports false when no relationship exists for td, as
// SPIRE's RefreshBundle answers NotFound.
type Refresher interface {
	RefreshBundleFor(ctx context.Context, td spiffeid.TrustDomain) (bool, error)
}

// SPIRE's schedule (pkg/server/bundle/client): a bundle is fetched four
// times per refresh hint, the hint is never taken below a minute, a bundle
// without a hint is fetched every five minutes, and the relationships are
// reloaded every ten seconds.
const (
	attemptsPerRefreshHint = 4
	minRefreshHint         = time.Minute
	// maxRefreshHint is ours: SPIRE has no ceiling, but a hint of years
	// would stop the refresh of a bundle whose authorities rotate.
	maxRefreshHint         = 24 * time.Hour
	defaultRefreshInterval = 5 * time.Minute
	configRefreshInterval  = 10 * time.Second
	// firstRetry is the wait after a first failed refresh; it doubles
	// with each failure up to the regular interval, so an endpoint that
	// is briefly down is retried soon and one that stays down no more
	// often than when it answers.
	firstRetry = 5 * time.Second
)

// Config configures a Manager.
type Config struct {
	// TrustDomain is this server's own: it never federates with itself,
	// and no foreign bundle may hold its authorities.
	TrustDomain spiffeid.TrustDomain
	DataStore   datastore.DataStore
	// Static are the federates_with relationships of the configuration;
	// they override the datastore's for the same trust domain, as in
	// SPIRE.
	Static []Relationship
	// Client fetches; nil uses a Client with the defaults.
	Client  *Client
	Metrics *telemetry.Metrics
	Log     *slog.Logger

	// configRefresh and firstRetry, when set, replace the package's
	// intervals (tests).
	configRefresh, firstRetry time.Duration
	// refreshed, when set, receives the trust domain and the wait chosen
	// after each scheduled refresh (tests).
	refreshed chan<- scheduled
}

type scheduled struct {
	td   spiffeid.TrustDomain
	next time.Duration
	err  error
}

// Manager keeps one updater per federation relationship and implements
// Refresher.
type Manager struct {
	cfg    Config
	client *Client
	log    *slog.Logger

	reloadMu sync.Mutex // one reload at a time
	mu       sync.Mutex
	updaters map[spiffeid.TrustDomain]*updater
	runCtx   context.Context // set by Run; updaters started before it wait
	wg       sync.WaitGroup
	// reloadNow asks Run for a reload before its next tick.
	reloadNow chan struct{}
}

var _ Refresher = (*Manager)(nil)

// updater refreshes one trust domain's bundle; mu serializes its refreshes
// (the schedule's and RefreshBundleFor's).
type updater struct {
	td     spiffeid.TrustDomain
	cancel context.CancelFunc
	done   chan struct{}

	relMu sync.Mutex
	rel   Relationship

	running bool // guarded by Manager.mu

	mu       sync.Mutex
	failures int
}

func (u *updater) relationship() Relationship {
	u.relMu.Lock()
	defer u.relMu.Unlock()
	return u.rel
}

// NewManager returns a Manager; Run starts refreshing.
func NewManager(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.configRefresh == 0 {
		cfg.configRefresh = configRefreshInterval
	}
	if cfg.firstRetry == 0 {
		cfg.firstRetry = firstRetry
	}
	c := cfg.Client
	if c == nil {
		c = &Client{}
	}
	return &Manager{cfg: cfg, client: c, log: cfg.Log, updaters: make(map[spiffeid.TrustDomain]*updater), reloadNow: make(chan struct{}, 1)}
}

// Run reloads the relationships every ten seconds and keeps an updater
// running for each until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.runCtx = ctx
	m.mu.Unlock()
	t := time.NewTicker(m.cfg.configRefresh)
	defer t.Stop()
	for {
		if err := m.reload(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("Failed to reload configs", "error", err)
		}
		select {
		case <-ctx.Done():
			m.stopAll()
			return nil
		case <-t.C:
		case <-m.reloadNow:
		}
	}
}

// TriggerConfigReload has Run reload the relationships now, as SPIRE's
// manager does when the trustdomain API changed them; it never blocks.
func (m *Manager) TriggerConfigReload() {
	select {
	case m.reloadNow <- struct{}{}:
	default:
	}
}

// RefreshBundleFor implements Refresher. Like SPIRE it reloads the
// relationships first, so that one just created is found.
func (m *Manager) RefreshBundleFor(ctx context.Context, td spiffeid.TrustDomain) (bool, error) {
	if err := m.reload(ctx); err != nil {
		m.log.Error("Failed to reload configs", "error", err)
	}
	m.mu.Lock()
	u, ok := m.updaters[td]
	m.mu.Unlock()
	if !ok {
		return false, nil
	}
	_, err := m.refresh(ctx, u)
	return true, err
}

// relationships merges the datastore's relationships with the static ones.
func (m *Manager) relationships(ctx context.Context) (map[spiffeid.TrustDomain]Relationship, error) {
	out := make(map[spiffeid.TrustDomain]Relationship)
	var firstErr error
	if m.cfg.DataStore != nil {
		frs, _, err := m.cfg.DataStore.ListFederationRelationships(ctx, nil)
		if err != nil {
			firstErr = fmt.Errorf("federation: list federation relationships: %w", err)
		}
		for _, fr := range frs {
			rel, err := RelationshipFromProto(fr)
			if err != nil {
				m.log.Warn("Ignoring federation relationship", "trust_domain", fr.GetTrustDomain(), "error", err)
				continue
			}
			out[rel.TrustDomain] = rel
		}
	}
	for _, rel := range m.cfg.Static {
		out[rel.TrustDomain] = rel
	}
	if firstErr != nil && len(m.cfg.Static) == 0 {
		return nil, firstErr
	}
	return out, firstErr
}

// RelationshipFromProto converts a datastore relationship.
func RelationshipFromProto(fr *types.FederationRelationship) (Relationship, error) {
	td, err := spiffeid.TrustDomainFromString(fr.GetTrustDomain())
	if err != nil {
		return Relationship{}, err
	}
	rel := Relationship{TrustDomain: td, EndpointURL: fr.GetBundleEndpointUrl()}
	switch p := fr.GetBundleEndpointProfile().(type) {
	case *types.FederationRelationship_HttpsWeb:
	case *types.FederationRelationship_HttpsSpiffe:
		id, err := spiffeid.FromString(p.HttpsSpiffe.GetEndpointSpiffeId())
		if err != nil {
			return Relationship{}, fmt.Errorf("endpoint SPIFFE ID: %w", err)
		}
		rel.EndpointSPIFFEID = id
	default:
		return Relationship{}, fmt.Errorf("unknown bundle endpoint profile type %T", p)
	}
	return rel, nil
}

// reload starts, reconfigures and stops updaters to match the
// relationships. A failure to read the datastore leaves the updaters as
// they are.
func (m *Manager) reload(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	rels, err := m.relationships(ctx)
	if rels == nil {
		return err
	}
	if _, ok := rels[m.cfg.TrustDomain]; ok {
		m.log.Warn("Ignoring federation relationship with the server's own trust domain", "trust_domain", m.cfg.TrustDomain.Name())
		delete(rels, m.cfg.TrustDomain)
	}
	var stop []*updater
	m.mu.Lock()
	for td, u := range m.updaters {
		rel, ok := rels[td]
		if !ok {
			m.log.Info("Trust domain no longer managed", "trust_domain", td.Name())
			stop = append(stop, u)
			delete(m.updaters, td)
			continue
		}
		u.relMu.Lock()
		if u.rel != rel {
			u.rel = rel
			m.log.Info("Updated configuration for managed trust domain", "trust_domain", td.Name(),
				"bundle_endpoint_url", rel.EndpointURL, "bundle_endpoint_profile", rel.Profile())
		}
		u.relMu.Unlock()
		if !u.running && m.runCtx != nil {
			m.start(u) // created by a RefreshBundleFor before Run
		}
		delete(rels, td)
	}
	for td, rel := range rels {
		m.log.Info("Trust domain is now managed", "trust_domain", td.Name(),
			"bundle_endpoint_url", rel.EndpointURL, "bundle_endpoint_profile", rel.Profile())
		u := &updater{td: td, rel: rel}
		m.updaters[td] = u
		if m.runCtx != nil {
			m.start(u)
		}
	}
	m.mu.Unlock()
	for _, u := range stop {
		u.stop()
	}
	return err
}

// start runs u's schedule; the caller holds m.mu.
func (m *Manager) start(u *updater) {
	ctx, cancel := context.WithCancel(m.runCtx)
	u.cancel, u.done, u.running = cancel, make(chan struct{}), true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(u.done)
		m.schedule(ctx, u)
	}()
}

// stop ends u's schedule, if it has one, and waits for it.
func (u *updater) stop() {
	if u.cancel != nil {
		u.cancel()
		<-u.done
	}
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	us := make([]*updater, 0, len(m.updaters))
	for td, u := range m.updaters {
		us = append(us, u)
		delete(m.updaters, td)
	}
	m.mu.Unlock()
	for _, u := range us {
		u.stop()
	}
	m.wg.Wait()
}

// schedule refreshes u's bundle at once, then at the chosen intervals.
func (m *Manager) schedule(ctx context.Context, u *updater) {
	log := m.log.With("trust_domain", u.td.Name())
	for {
		next, err := m.refresh(ctx, u)
		if ctx.Err() != nil {
			log.Info("No longer polling for updates")
			return
		}
		log.Debug("Scheduling next bundle refresh", "at", time.Now().Add(next).UTC().Format(time.RFC3339))
		if m.cfg.refreshed != nil {
			select {
			case m.cfg.refreshed <- scheduled{td: u.td, next: next, err: err}:
			case <-ctx.Done():
			}
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Info("No longer polling for updates")
			return
		case <-t.C:
		}
	}
}

// refresh fetches and stores u's bundle once and returns when to refresh
// next.
func (m *Manager) refresh(ctx context.Context, u *updater) (next time.Duration, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	log := m.log.With("trust_domain", u.td.Name())
	call := m.cfg.Metrics.StartCall("bundle_manager", "fetch", "federated_bundle")
	call.AddLabel("trust_domain_id", u.td.Name())
	defer call.Done(&err)

	local, fetched, err := m.update(ctx, u.relationship())
	if err != nil {
		if ctx.Err() == nil {
			log.Error("Error updating bundle", "error", err)
		}
		u.failures++
		regular := minRefreshHint / attemptsPerRefreshHint
		if local != nil {
			regular = nextRefresh(local)
		}
		return retryAfter(m.cfg.firstRetry, u.failures, regular), err
	}
	u.failures = 0
	if fetched != nil {
		m.cfg.Metrics.IncrCounter([]string{"bundle_manager", "update", "federated_bundle"}, 1,
			telemetry.Label{Name: "trust_domain_id", Value: u.td.Name()})
		log.Info("Bundle refreshed")
		return nextRefresh(fetched), nil
	}
	return nextRefresh(local), nil
}

// retryAfter is the wait after the n-th consecutive failure: first,
// doubled per failure, never past regular.
func retryAfter(first time.Duration, n int, regular time.Duration) time.Duration {
	d := first
	for i := 1; i < n && d < regular; i++ {
		d *= 2
	}
	return min(d, max(regular, first))
}

// nextRefresh is SPIRE's: a quarter of the bundle's refresh hint, the hint
// clamped to [1m, 24h]; five minutes without a hint.
func nextRefresh(b *spiffebundle.Bundle) time.Duration {
	hint, ok := b.RefreshHint()
	if !ok || hint <= 0 {
		return defaultRefreshInterval
	}
	return min(max(hint, minRefreshHint), maxRefreshHint) / attemptsPerRefreshHint
}

// errRefused marks a fetched bundle refused by a check; the last good
// bundle stays.
var errRefused = errors.New("bundle refused")

// update fetches rel's bundle and stores it when it differs from the
// stored one. It returns the stored bundle (nil when there is none yet)
// and the fetched one when it was stored.
func (m *Manager) update(ctx context.Context, rel Relationship) (local, stored *spiffebundle.Bundle, err error) {
	local, err = m.fetchLocal(ctx, rel.TrustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to fetch local federated bundle: %w", err)
	}
	var roots []*x509.Certificate
	if !rel.EndpointSPIFFEID.IsZero() {
		endpointTD := rel.EndpointSPIFFEID.TrustDomain()
		eb := local
		if endpointTD != rel.TrustDomain {
			if eb, err = m.fetchLocal(ctx, endpointTD); err != nil {
				return local, nil, fmt.Errorf("failed to fetch local copy of bundle for %q: %w", endpointTD.Name(), err)
			}
		}
		if eb != nil {
			roots = eb.X509Authorities()
		}
	}
	fetched, err := m.client.Fetch(ctx, rel, roots)
	if err != nil {
		return local, nil, fmt.Errorf("failed to fetch federated bundle from endpoint: %w", err)
	}
	if err := m.check(ctx, local, fetched); err != nil {
		return local, nil, err
	}
	if local != nil && fetched.Equal(local) {
		return local, nil, nil
	}
	pb, err := bundleToProto(fetched)
	if err != nil {
		return local, nil, err
	}
	if _, err := m.cfg.DataStore.SetBundle(ctx, pb); err != nil {
		return local, nil, fmt.Errorf("failed to store fetched federated bundle: %w", err)
	}
	return local, fetched, nil
}

// check refuses a fetched bundle whose sequence number is below the
// stored one's, or that holds one of this trust domain's own authorities
// (an endpoint replaying our bundle under its name would make our
// workloads' SVIDs pass as the foreign domain's).
func (m *Manager) check(ctx context.Context, local, fetched *spiffebundle.Bundle) error {
	if local != nil {
		have, okHave := local.SequenceNumber()
		got, okGot := fetched.SequenceNumber()
		if okHave && okGot && got < have {
			return fmt.Errorf("%w: sequence number went backwards from %d to %d; keeping the stored bundle", errRefused, have, got)
		}
	}
	own, err := m.fetchLocal(ctx, m.cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("failed to fetch the server's own bundle: %w", err)
	}
	if own == nil {
		return nil
	}
	for _, c := range fetched.X509Authorities() {
		for _, o := range own.X509Authorities() {
			if bytes.Equal(c.Raw, o.Raw) {
				return fmt.Errorf("%w: it holds an X.509 authority of this server's own trust domain %q (%s)", errRefused, m.cfg.TrustDomain.Name(), c.Subject)
			}
		}
	}
	return nil
}

// fetchLocal returns the stored bundle of td, or nil when there is none.
func (m *Manager) fetchLocal(ctx context.Context, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	pb, err := m.cfg.DataStore.FetchBundle(ctx, td.Name())
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return bundleFromProto(pb)
}
