// Package api implements SPIRE's server API (agent/v1, entry/v1, svid/v1,
// bundle/v1, debug/v1, localauthority/v1, logger/v1, trustdomain/v1) over the datastore and the CA,
// together with the authorization that decides which caller may call what.
//
// The services speak the wire contract of github.com/spiffe/spire-api-sdk so
// that SPIRE's agents and CLIs work against this server unchanged.
package api

import (
	"context"
	"crypto/x509"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/nodeattestor"
	"github.com/spiffe-hw/spire-hw/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CA is what the API needs from the certificate authority.
type CA interface {
	IssueX509SVID(ctx context.Context, p ca.X509SVIDParams) (*ca.X509SVID, error)
	SignJWTSVID(ctx context.Context, p ca.JWTSVIDParams) (string, error)
}

// Limits that keep one request from monopolising the server.
const (
	// MaxBatch bounds the items in one Batch* request.
	MaxBatch = 1000
	// MaxCSRSize bounds one DER-encoded CSR.
	MaxCSRSize = 16 << 10
	// MaxChallengeRounds bounds challenge/response rounds in AttestAgent.
	MaxChallengeRounds = 16
	// DefaultAttestMessageTimeout bounds the wait for each message of an
	// AttestAgent stream (the first request, each challenge response).
	// Agents send their parameters at once and a real TPM answers a
	// challenge in a few seconds; without a bound, a caller that opens
	// streams and sends nothing holds a handler each for as long as it
	// likes, and an open stream keeps its connection from counting as idle.
	DefaultAttestMessageTimeout = 30 * time.Second
	// syncPageSize is the server-determined page size of
	// SyncAuthorizedEntries.
	syncPageSize = 500
)

// Config wires the services.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	DataStore   datastore.DataStore
	CA          CA
	// Attestors by attestation data type.
	Attestors map[string]nodeattestor.Attestor
	// AgentTTL is the lifetime of agent SVIDs; 0 lets the CA pick its
	// default X.509-SVID TTL.
	AgentTTL time.Duration
	// AdminIDs may call admin APIs over TCP.
	AdminIDs []spiffeid.ID
	// ServerSVID returns the server's current SVID chain, for debug/GetInfo.
	ServerSVID func() []*x509.Certificate
	// RateLimit turns on SPIRE's per-IP limits (server { ratelimit {} }).
	RateLimit RateLimits
	// AuditLog writes SPIRE's audit line for every authorized call
	// (audit_log_enabled).
	AuditLog bool
	// MaxAttestedNodeInfoStaleness, when set, is how long a node read to
	// authenticate an agent is trusted before the database is asked again
	// (max_attested_node_info_staleness; 0 asks it on every call, as
	// SPIRE's default). Nil keeps nodeTTL.
	MaxAttestedNodeInfoStaleness *time.Duration
	// NoChangeNotices leaves our notice service (wire/push) out of
	// Register (server change_notices = false).
	NoChangeNotices bool
	// LogLevel is the server's live log level, which logger/v1 reads and
	// changes; nil when the server's logger cannot change level (the
	// logger service then answers FailedPrecondition).
	LogLevel *logging.Level
	// BundleRefresher refreshes federated bundles for trustdomain/v1's
	// RefreshBundle (server/federation's refresher); nil answers Internal.
	BundleRefresher BundleRefresher
	// AttestMessageTimeout overrides DefaultAttestMessageTimeout (tests).
	AttestMessageTimeout time.Duration
	Clock                func() time.Time
	// Metrics receives SPIRE's API-side metrics (entry.cache.reload); nil
	// drops them.
	Metrics *telemetry.Metrics
	Log     *slog.Logger
}

// API holds the services; register them with Register.
type API struct {
	cfg     Config
	entries *entryCache
	nodes   *nodeCache
	bundle  *bundleCache
	started time.Time
	limits  map[string]methodLimit
	sec     *secLog
	notices *notices
}

// New returns the services for cfg.
func New(cfg Config) *API {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.AttestMessageTimeout <= 0 {
		cfg.AttestMessageTimeout = DefaultAttestMessageTimeout
	}
	ttl := nodeTTL
	if cfg.MaxAttestedNodeInfoStaleness != nil {
		ttl = *cfg.MaxAttestedNodeInfoStaleness
	}
	a := &API{cfg: cfg, entries: newEntryCache(cfg.DataStore, cfg.Metrics), nodes: newNodeCache(cfg.DataStore, cfg.Clock, ttl),
		bundle: &bundleCache{ds: cfg.DataStore, td: cfg.TrustDomain.Name()}, started: cfg.Clock(),
		limits: newMethodLimits(cfg.RateLimit, cfg.Clock), sec: newSecLog(cfg.Log, 0)}
	a.notices = newNotices(a)
	a.entries.changed, a.bundle.changed = a.notices.changed, a.notices.changed
	a.entries.log = cfg.Log
	return a
}

// StopNotices ends every notice stream and refuses new ones; call it
// before a graceful stop, which would otherwise wait for them.
func (a *API) StopNotices() { a.notices.stop() }

func (a *API) now() time.Time { return a.cfg.Clock() }

// serverID is spiffe://<td>/spire/server, the parent of node-alias entries.
func (a *API) serverID() spiffeid.ID {
	return spiffeid.RequireFromPath(a.cfg.TrustDomain, "/spire/server")
}

// idFromProto validates a SPIFFE ID from the wire and requires it to be in
// the server's trust domain.
func (a *API) idFromProto(what string, p *types.SPIFFEID) (spiffeid.ID, error) {
	if p == nil {
		return spiffeid.ID{}, fmt.Errorf("%s: missing", what)
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s: invalid trust domain %q: %v", what, p.TrustDomain, err)
	}
	id, err := spiffeid.FromPath(td, p.Path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s: invalid path %q: %v", what, p.Path, err)
	}
	if td != a.cfg.TrustDomain {
		return spiffeid.ID{}, fmt.Errorf("%s: %q is not a member of trust domain %q", what, id, a.cfg.TrustDomain)
	}
	return id, nil
}

// workloadIDFromProto is idFromProto for IDs that SVIDs are issued to
// (entries, node aliases): like SPIRE, it refuses the trust domain itself
// and the /spire namespace, which belongs to agents and servers.
func (a *API) workloadIDFromProto(what string, p *types.SPIFFEID) (spiffeid.ID, error) {
	id, err := a.idFromProto(what, p)
	if err != nil {
		return spiffeid.ID{}, err
	}
	switch path := id.Path(); {
	case path == "":
		return spiffeid.ID{}, fmt.Errorf("%s: %q is not a workload in trust domain %q; path is empty", what, id, a.cfg.TrustDomain)
	case path == "/spire" || strings.HasPrefix(path, "/spire/"):
		return spiffeid.ID{}, fmt.Errorf("%s: %q is not a workload in trust domain %q; path is in the reserved namespace", what, id, a.cfg.TrustDomain)
	}
	return id, nil
}

func idToProto(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// protoIDString renders a wire SPIFFE ID without validating it; the
// datastore keys entries by this string.
func protoIDString(p *types.SPIFFEID) string {
	if p == nil {
		return ""
	}
	return "spiffe://" + p.TrustDomain + p.Path
}

// dsError maps datastore errors to gRPC statuses.
func dsError(what string, err error) error {
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", what)
	case errors.Is(err, datastore.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s: already exists", what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case databaseUnreachable(err):
		// The database is down or restarting: a passing condition the
		// caller should retry (servers sharing a database keep serving
		// agents from their caches meanwhile), not an internal error.
		return status.Errorf(codes.Unavailable, "%s: database unavailable: %v", what, err)
	default:
		return status.Errorf(codes.Internal, "%s: %v", what, err)
	}
}

// databaseUnreachable says whether a datastore error means that the
// database could not be reached, on any engine: a failed dial or a broken
// connection (database/sql's ErrBadConn, a network error, a connection cut
// mid-reply), or an SQLSTATE of class 08 (connection exception) or 57P
// (the server shutting down or restarting), which PostgreSQL's driver
// reports through SQLState.
func databaseUnreachable(err error) bool {
	var netErr net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &netErr) {
		return true
	}
	var st interface{ SQLState() string }
	if errors.As(err, &st) {
		code := st.SQLState()
		return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "57P")
	}
	return false
}

// toStatus renders err as the per-item status of a Batch* response.
func toStatus(err error) *types.Status {
	if err == nil {
		return &types.Status{Code: int32(codes.OK), Message: "OK"}
	}
	st := status.Convert(err)
	return &types.Status{Code: int32(st.Code()), Message: st.Message()}
}

// signError maps a CA failure: parameters the CA refuses are the caller's
// fault; anything else is the server's.
func signError(what string, err error) error {
	if errors.Is(err, ca.ErrInvalidParams) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	// A signing key that is unreachable (HSM token removed) is a passing
	// condition the caller should retry, not an internal error.
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "%s: %v", what, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}
