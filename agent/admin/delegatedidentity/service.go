package delegatedidentity

import (
	"context"
	"log/slog"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Attestor turns a process, pinned by a pidfd the caller owns, into
// selectors; workloadapi.Handler is the agent's, so that delegates and the
// workloads they name are attested exactly as Workload API callers are. It
// fails when the process exited during attestation.
type Attestor interface {
	AttestPIDFD(ctx context.Context, log *slog.Logger, pid int32, pidfd int) ([]*types.Selector, error)
}

// Manager is what the API serves from (agent/manager.Manager).
type Manager interface {
	// SubscribeToCacheChanges streams what workloads with these selectors
	// may see, the current state first.
	SubscribeToCacheChanges(ctx context.Context, selectors []*types.Selector) (cache.Subscription, error)
	// FetchJWTSVID returns a JWT-SVID for the entry and audience.
	FetchJWTSVID(ctx context.Context, entry *types.Entry, audience []string) (*cache.JWTSVID, error)
}

// Cache is the agent's cache (agent/cache.Cache): the entries a set of
// selectors matches, and every bundle.
type Cache interface {
	MatchingEntries(selectors []*types.Selector) []*types.Entry
	SubscribeToBundles(ctx context.Context) cache.BundleSubscription
}

// DefaultMaxStreamsPerUID is how many streams one uid may hold open at
// once: a delegate holds a few (bundles, and one X.509 stream per workload
// or per selector set it serves), so 256 is room for a node full of pods.
const DefaultMaxStreamsPerUID = 256

// Config is what the service needs.
type Config struct {
	Manager  Manager
	Cache    Cache
	Attestor Attestor
	// AuthorizedDelegates are the SPIFFE IDs (authorized_delegates) whose
	// holders may use the API.
	AuthorizedDelegates []spiffeid.ID
	// MaxStreamsPerUID caps the streams one uid holds open at once (0:
	// DefaultMaxStreamsPerUID, negative: no cap).
	MaxStreamsPerUID int
	// Log gets the service's lines (nil: none).
	Log *slog.Logger
	// Metrics gets SPIRE's delegated_identity_api metrics (nil: none).
	Metrics *telemetry.Metrics
}

// Service implements delegatedidentityv1.DelegatedIdentityServer.
type Service struct {
	delegatedidentityv1.UnsafeDelegatedIdentityServer

	manager    Manager
	cache      Cache
	attestor   Attestor
	delegates  map[spiffeid.ID]bool
	log        *slog.Logger
	metrics    *telemetry.Metrics
	maxStreams int

	mu      sync.Mutex
	streams map[uint32]int // open streams by caller uid
	conns   int            // open calls, SPIRE's connections gauge
}

var _ delegatedidentityv1.DelegatedIdentityServer = (*Service)(nil)

// New returns the service.
func New(cfg Config) *Service {
	delegates := make(map[spiffeid.ID]bool, len(cfg.AuthorizedDelegates))
	for _, id := range cfg.AuthorizedDelegates {
		delegates[id] = true
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxStreams := cfg.MaxStreamsPerUID
	if maxStreams == 0 {
		maxStreams = DefaultMaxStreamsPerUID
	}
	return &Service{
		manager: cfg.Manager, cache: cfg.Cache, attestor: cfg.Attestor,
		delegates: delegates, log: log, metrics: cfg.Metrics, maxStreams: maxStreams,
		streams: map[uint32]int{},
	}
}

// Register adds the service to s.
func Register(s grpc.ServiceRegistrar, svc *Service) {
	delegatedidentityv1.RegisterDelegatedIdentityServer(s, svc)
}

// caller is an attested, authorized delegate.
type caller struct {
	info      *peer.Info
	selectors []*types.Selector
	log       *slog.Logger
}

// begin counts a call as SPIRE's connection metrics do (a counter of
// calls and a gauge of those open) and returns its end.
func (s *Service) begin() func() {
	s.metrics.IncrCounter([]string{"delegated_identity_api", "connection"}, 1)
	s.mu.Lock()
	s.conns++
	n := s.conns
	s.mu.Unlock()
	s.metrics.SetGauge([]string{"delegated_identity_api", "connections"}, float32(n))
	return func() {
		s.mu.Lock()
		s.conns--
		n := s.conns
		s.mu.Unlock()
		s.metrics.SetGauge([]string{"delegated_identity_api", "connections"}, float32(n))
	}
}

// authorize attests the caller and checks that it holds an authorized
// delegate's SPIFFE ID, with SPIRE's codes and messages.
func (s *Service) authorize(ctx context.Context, method string) (*caller, error) {
	info, ok := peer.FromContext(ctx)
	if !ok {
		s.log.Error("No peer credentials on the connection; serve the API with admin.NewServer", "method", method)
		return nil, status.Error(codes.Internal, "workload attestation failed")
	}
	log := s.log.With("method", method, "caller_pid", info.PID, "caller_uid", info.UID)
	pidfd, err := info.DupPIDFD()
	if err != nil {
		log.Error("Workload attestation failed", "error", err)
		return nil, status.Error(codes.Internal, "workload attestation failed")
	}
	selectors, err := s.attestor.AttestPIDFD(ctx, log, info.PID, pidfd)
	closeFD(pidfd)
	if err != nil {
		log.Error("Workload attestation failed", "error", err)
		return nil, status.Error(codes.Internal, "workload attestation failed")
	}
	c := &caller{info: info, selectors: selectors, log: log}
	if err := s.recheck(c); err != nil {
		return nil, err
	}
	return c, nil
}

// recheck tells whether the caller's selectors, as attested at the start
// of its call, still match an entry of an authorized delegate. Streams ask
// before every message: the entry may have been deleted since.
func (s *Service) recheck(c *caller) error {
	entries := s.cache.MatchingEntries(c.selectors)
	if len(entries) == 0 {
		c.log.Error("Permission denied; no identity issued", "delegate_selectors", selectorStrings(c.selectors))
		return status.Error(codes.PermissionDenied, "no identity issued")
	}
	for _, e := range entries {
		id, err := cache.EntryID(e)
		if err == nil && s.delegates[id] {
			c.log.Debug("Caller authorized as delegate", "delegate_id", id.String())
			return nil
		}
	}
	def, _ := cache.EntryID(entries[0])
	c.log.Error("Permission denied; caller not configured as an authorized delegate.",
		"num_registered_entries", len(entries), "default_id", def.String(),
		"delegate_selectors", selectorStrings(c.selectors))
	return status.Error(codes.PermissionDenied, "caller not configured as an authorized delegate")
}

// openStream counts a stream against its caller's uid and returns its
// release, or ResourceExhausted at the cap.
func (s *Service) openStream(c *caller) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := c.info.UID
	if s.maxStreams > 0 && s.streams[uid] >= s.maxStreams {
		c.log.Warn("Refusing stream: the caller's uid holds the most streams allowed", "max_streams_per_uid", s.maxStreams)
		return nil, status.Errorf(codes.ResourceExhausted, "too many open streams for uid %d (at most %d)", uid, s.maxStreams)
	}
	s.streams[uid]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.streams[uid]--; s.streams[uid] <= 0 {
			delete(s.streams, uid)
		}
	}, nil
}

// selectors resolves a request's target into the selectors to serve:
// as given, or attested from the PID. For a PID it also returns the
// process, pinned, which the caller must close.
func (s *Service) selectors(ctx context.Context, c *caller, pid int32, reqSelectors []*types.Selector) ([]*types.Selector, *process, error) {
	t, err := parseTarget(pid, reqSelectors)
	if err != nil {
		if _, bad := err.(errBadSelector); bad {
			c.log.Error("Invalid argument; could not parse provided selectors", "error", err)
			return nil, nil, status.Error(codes.InvalidArgument, "could not parse provided selectors")
		}
		c.log.Error("Invalid argument", "error", err)
		return nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if t.pid == 0 {
		// The delegate vouches for selectors it gives; they are not attested.
		return t.selectors, nil, nil
	}
	log := c.log.With("pid", t.pid)
	p, err := openProcess(t.pid)
	if err != nil {
		log.Error("Refusing PID: no such process", "error", err)
		return nil, nil, status.Errorf(codes.NotFound, "no process with PID %d", t.pid)
	}
	sel, err := s.attestor.AttestPIDFD(ctx, log, t.pid, p.fd())
	if err != nil {
		p.close()
		log.Error("Refusing PID: the process exited during attestation", "error", err)
		return nil, nil, status.Errorf(codes.NotFound, "process with PID %d exited during attestation", t.pid)
	}
	return sel, p, nil
}

func selectorStrings(sels []*types.Selector) []string {
	out := make([]string, 0, len(sels))
	for _, s := range sels {
		out = append(out, s.Type+":"+s.Value)
	}
	return out
}

func idProto(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}
