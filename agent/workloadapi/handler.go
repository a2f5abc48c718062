// Package workloadapi serves the SPIFFE Workload API on the agent's Unix
// socket. Every call is attested: the caller's process is identified through
// its pidfd (package peer), turned into selectors by the configured
// attestors, and confirmed to still be alive before the Manager is asked for
// the identities those selectors may see.
package workloadapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe-hw/spire-hw/agent/peer"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Config is what a Handler needs.
type Config struct {
	Manager   Manager
	Attestors []Attestor
	// TrustDomain is the agent's own trust domain. JWT-SVIDs from other
	// trust domains have their non-registered claims removed on validation,
	// as SPIRE does.
	TrustDomain spiffeid.TrustDomain
	Log         *slog.Logger
	// Ready, if set, answers the gRPC health service on the socket
	// (what `spire-agent healthcheck` asks): NOT_SERVING while it returns
	// an error. Without it the service always answers SERVING.
	Ready func() error
	// Metrics gets SPIRE's workload attestation metrics (nil drops them).
	Metrics *telemetry.Metrics
}

// Handler implements workload.SpiffeWorkloadAPIServer.
type Handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	c Config
	// metricNames are the attestors' metric labels, in Attestors' order,
	// worked out once rather than on every call.
	metricNames []string
}

var _ workload.SpiffeWorkloadAPIServer = (*Handler)(nil)

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	h := &Handler{c: cfg}
	for _, a := range cfg.Attestors {
		h.metricNames = append(h.metricNames, attestorMetricName(a))
	}
	return h
}

// standardClaims survive validation of a foreign JWT-SVID.
var standardClaims = map[string]bool{
	"aud": true, "exp": true, "iat": true, "iss": true, "jti": true, "nbf": true, "sub": true,
}

// FetchX509SVID streams the caller's X.509-SVIDs, one message per change.
func (h *Handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return streamUpdates(h, stream, "FetchX509SVID", func(update *cache.WorkloadUpdate, log *slog.Logger) (*workload.X509SVIDResponse, error) {
		ids := filterIdentities(update.Identities)
		if len(ids) == 0 {
			log.Info("workloadapi: no identity issued")
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp, err := composeX509SVIDResponse(update, ids)
		if err != nil {
			log.Error("workloadapi: compose X.509-SVID response", "err", err)
			return nil, status.Errorf(codes.Unavailable, "could not serialize response: %v", err)
		}
		return resp, nil
	})
}

// FetchX509Bundles streams the X.509 authorities the caller may trust. Like
// SPIRE, a caller with no identity gets PermissionDenied.
func (h *Handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return streamUpdates(h, stream, "FetchX509Bundles", func(update *cache.WorkloadUpdate, _ *slog.Logger) (*workload.X509BundlesResponse, error) {
		if len(update.Identities) == 0 {
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		if update.Bundle == nil {
			return nil, status.Error(codes.Unavailable, "bundle not available")
		}
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{
			update.Bundle.TrustDomain().IDString(): concatDER(update.Bundle.X509Authorities()),
		}}
		for td, b := range update.FederatedBundles {
			resp.Bundles[td.IDString()] = concatDER(b.X509Authorities())
		}
		return resp, nil
	})
}

// streamUpdates serves one Workload API stream: it attests the caller,
// subscribes to its cache view and sends what compose makes of each update,
// skipping updates that would send the same message again. compose returns
// the gRPC status that ends the stream when the update cannot be served.
func streamUpdates[R any, P interface {
	*R
	proto.Message
}](h *Handler, stream grpc.ServerStreamingServer[R], method string, compose func(*cache.WorkloadUpdate, *slog.Logger) (P, error)) error {
	ctx := stream.Context()
	selectors, log, err := h.attest(ctx, method)
	if err != nil {
		return err
	}
	sub, err := h.c.Manager.SubscribeToCacheChanges(ctx, selectors)
	if err != nil {
		log.Error("workloadapi: subscribe failed", "err", err)
		return status.Errorf(codes.Unavailable, "could not subscribe to cache changes: %v", err)
	}
	defer sub.Finish()

	var prev P
	sent := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case update, ok := <-sub.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "subscription closed")
			}
			resp, err := compose(update, log)
			if err != nil {
				return err
			}
			if sent && proto.Equal(resp, prev) {
				continue
			}
			if err := stream.Send((*R)(resp)); err != nil {
				return err
			}
			prev, sent = resp, true
		}
	}
}

// FetchJWTSVID mints a JWT-SVID for each of the caller's identities (or only
// the one asked for) for the requested audience.
func (h *Handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.SpiffeId != "" {
		if _, err := spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
	}
	selectors, log, err := h.attest(ctx, "FetchJWTSVID")
	if err != nil {
		return nil, err
	}
	update := h.c.Manager.FetchWorkloadUpdate(selectors)
	resp := &workload.JWTSVIDResponse{}
	// Entries, not Identities: a JWT-SVID needs no X.509-SVID, which
	// beyond x509_svid_cache_max_size an entry may not hold.
	for _, entry := range filterEntries(update.Entries) {
		sid, err := entryID(entry)
		if err != nil {
			log.Error("workloadapi: entry with invalid SPIFFE ID", "err", err)
			continue
		}
		if req.SpiffeId != "" && sid.String() != req.SpiffeId {
			continue
		}
		svid, err := h.c.Manager.FetchJWTSVID(ctx, entry, req.Audience)
		if err != nil {
			log.Error("workloadapi: fetch JWT-SVID", "spiffe_id", sid.String(), "err", err)
			return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID: %v", err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: sid.String(), Svid: svid.Token, Hint: entry.GetHint()})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

// FetchJWTBundles streams the JWT authorities (as JWKS) the caller may trust.
func (h *Handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return streamUpdates(h, stream, "FetchJWTBundles", func(update *cache.WorkloadUpdate, log *slog.Logger) (*workload.JWTBundlesResponse, error) {
		if len(update.Identities) == 0 {
			return nil, status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp, err := composeJWTBundlesResponse(update)
		if err != nil {
			log.Error("workloadapi: compose JWT bundles response", "err", err)
			return nil, status.Errorf(codes.Unavailable, "could not serialize response: %v", err)
		}
		return resp, nil
	})
}

// ValidateJWTSVID checks a token against the JWT authorities the caller can
// see and returns its subject and claims.
func (h *Handler) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	selectors, log, err := h.attest(ctx, "ValidateJWTSVID")
	if err != nil {
		return nil, err
	}
	update := h.c.Manager.FetchWorkloadUpdate(selectors)
	set := jwtbundle.NewSet()
	if update.Bundle != nil {
		set.Add(update.Bundle.JWTBundle())
	}
	for _, b := range update.FederatedBundles {
		set.Add(b.JWTBundle())
	}
	resp, err := validateJWT(req.Svid, req.Audience, set, h.c.TrustDomain)
	if err != nil {
		log.Warn("workloadapi: JWT-SVID failed validation", "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return resp, nil
}

// validateJWT checks token (network input) against set and builds the
// response. Claims of a foreign trust domain are cut to the standard ones.
func validateJWT(token, audience string, set *jwtbundle.Set, td spiffeid.TrustDomain) (*workload.ValidateJWTSVIDResponse, error) {
	svid, err := jwtsvid.ParseAndValidate(token, set, []string{audience})
	if err != nil {
		return nil, err
	}
	claims := make(map[string]any, len(svid.Claims))
	for k, v := range svid.Claims {
		if !svid.ID.MemberOf(td) && !standardClaims[k] {
			continue
		}
		claims[k] = v
	}
	// SPIRE has always answered with aud as a list, even for one audience.
	if aud, ok := claims["aud"].(string); ok {
		claims["aud"] = []string{aud}
	}
	s, err := structFromClaims(claims)
	if err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: s}, nil
}

// attest checks the security header, then attests the caller.
func (h *Handler) attest(ctx context.Context, method string) ([]*types.Selector, *slog.Logger, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md["workload.spiffe.io"]) != 1 || md["workload.spiffe.io"][0] != "true" {
		return nil, nil, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return h.attestCaller(ctx, method)
}

// attestCaller identifies the caller and runs every attestor; SDS calls
// come here directly, since SPIRE asks them for no security header. It
// fails with Unauthenticated when the caller died during attestation: its
// PID may already name a different process, whose selectors we might just
// have collected.
func (h *Handler) attestCaller(ctx context.Context, method string) (_ []*types.Selector, _ *slog.Logger, err error) {
	// SPIRE's workload_api.workload_attestation call counter.
	defer h.c.Metrics.StartCall("workload_api", "workload_attestation").Done(&err)
	info, ok := peer.FromContext(ctx)
	if !ok {
		h.c.Log.Error("workloadapi: no peer credentials on connection; serve with NewServer", "method", method)
		return nil, nil, status.Error(codes.Internal, "caller credentials unavailable")
	}
	// Most calls log nothing: the attributes are formatted only for a
	// call that does (callLog).
	log := callLog(h.c.Log, slog.String("method", method), slog.Int("pid", int(info.PID)), slog.Uint64("uid", uint64(info.UID)))

	pidfd, err := info.DupPIDFD()
	if err != nil {
		return nil, nil, status.Errorf(codes.Unauthenticated, "caller gone: %v", err)
	}
	defer closePIDFD(pidfd)
	selectors, err := h.attestPIDFD(ctx, log, info.PID, pidfd)
	if err != nil {
		log.Warn("workloadapi: caller exited during attestation; refusing (its PID may be reused)", "err", err)
		return nil, nil, status.Error(codes.Unauthenticated, "caller exited during attestation")
	}
	return selectors, log, nil
}

// AttestPIDFD runs every workload attestor on the process pid, pinned by
// pidfd (which the caller owns), and returns the selectors it has, without
// duplicates. It is the one attestation path of the agent: the Workload
// API's callers come here, and so do the Delegated Identity API's delegates
// and the workloads they name by PID. A failing attestor contributes
// nothing, as in SPIRE; the error is peer.ErrExited (or the pidfd check's
// own) when the process exited while it was attested, since its PID may
// then already name another process whose selectors were collected. log
// names the call in attestor failures.
func (h *Handler) AttestPIDFD(ctx context.Context, log *slog.Logger, pid int32, pidfd int) (_ []*types.Selector, err error) {
	// SPIRE's workload_api.workload_attestation call counter, which its
	// Delegated Identity API's attestations go through too.
	defer h.c.Metrics.StartCall("workload_api", "workload_attestation").Done(&err)
	return h.attestPIDFD(ctx, log, pid, pidfd)
}

// attestPIDFD is AttestPIDFD without the call counter, which attest keeps
// around its header check too.
func (h *Handler) attestPIDFD(ctx context.Context, log *slog.Logger, pid int32, pidfd int) ([]*types.Selector, error) {
	var (
		mu        sync.Mutex
		wg        sync.WaitGroup
		selectors []*types.Selector
	)
	attest := func(i int) {
		a := h.c.Attestors[i]
		call := h.c.Metrics.StartCall("workload_api", "workload_attestor")
		call.AddLabel("attestor", h.metricNames[i])
		s, err := a.Attest(ctx, pid, pidfd)
		call.Done(&err)
		if err != nil {
			// As SPIRE: a failing attestor contributes nothing; fewer
			// selectors can only mean fewer identities.
			log.Error("workloadapi: workload attestor failed", "attestor", attestorName(a), "err", err)
			return
		}
		mu.Lock()
		selectors = append(selectors, s...)
		mu.Unlock()
	}
	// The attestors run at once, the last on this goroutine: waking a
	// goroutine costs more than a /proc read on a small machine, and an
	// external plugin (configured after the built-ins, as a rule) is then
	// waited for without an extra hand-off (bench/RESULTS-plugin.md).
	n := len(h.c.Attestors)
	for i := range max(n-1, 0) {
		wg.Go(func() { attest(i) })
	}
	if n > 0 {
		attest(n - 1)
	}
	wg.Wait()

	if err := peer.CheckPIDFD(pidfd); err != nil {
		return nil, err
	}
	selectors = dedupSelectors(selectors)
	h.c.Metrics.AddSample([]string{"workload_api", "discovered_selectors"}, float32(len(selectors)))
	return selectors, nil
}

// attestorMetricName is the attestor label: the plugin's name, as SPIRE
// labels it ("unix", "docker"); a built-in without a Name is named by its
// package.
func attestorMetricName(a Attestor) string {
	if n, ok := a.(interface{ Name() string }); ok {
		return n.Name()
	}
	t := strings.TrimLeft(fmt.Sprintf("%T", a), "*")
	pkg, _, _ := strings.Cut(t, ".")
	return pkg
}

// attestorName names a for logs: external plugins by their configured
// name, built-ins by their type.
func attestorName(a Attestor) string {
	if n, ok := a.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", a)
}

func dedupSelectors(in []*types.Selector) []*types.Selector {
	if len(in) <= 16 {
		// A caller has a handful of selectors: comparing them pairwise
		// costs less than a map.
		out := in[:0]
		for _, s := range in {
			if !slices.ContainsFunc(out, func(o *types.Selector) bool { return o.Type == s.Type && o.Value == s.Value }) {
				out = append(out, s)
			}
		}
		return out
	}
	seen := make(map[[2]string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		k := [2]string{s.Type, s.Value}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

// filterIdentities keeps, among identities sharing a non-empty hint, only
// the one with the oldest entry, as SPIRE does, so a workload that picks by
// hint gets a stable answer.
func filterIdentities(ids []cache.Identity) []cache.Identity {
	return oldestPerHint(ids, func(id cache.Identity) *types.Entry {
		if id.SVID == nil {
			return nil
		}
		return id.Entry
	})
}

// filterEntries is filterIdentities for entries.
func filterEntries(entries []*types.Entry) []*types.Entry {
	return oldestPerHint(entries, func(e *types.Entry) *types.Entry { return e })
}

// oldestPerHint keeps the items whose entry is not nil and, among those
// sharing a non-empty hint, only the one with the oldest entry.
func oldestPerHint[T any](items []T, entry func(T) *types.Entry) []T {
	best := make(map[string]int)
	for i, it := range items {
		e := entry(it)
		hint := e.GetHint()
		if e == nil || hint == "" {
			continue
		}
		if j, ok := best[hint]; !ok || e.GetCreatedAt() < entry(items[j]).GetCreatedAt() {
			best[hint] = i
		}
	}
	out := make([]T, 0, len(items))
	for i, it := range items {
		e := entry(it)
		if e == nil {
			continue
		}
		if hint := e.GetHint(); hint != "" && best[hint] != i {
			continue
		}
		out = append(out, it)
	}
	return out
}

func entryID(e *types.Entry) (spiffeid.ID, error) {
	if e == nil || e.SpiffeId == nil {
		return spiffeid.ID{}, errors.New("entry has no SPIFFE ID")
	}
	td, err := spiffeid.TrustDomainFromString(e.SpiffeId.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(td, e.SpiffeId.Path)
}

// composeX509SVIDResponse builds the response for ids. It copies nothing
// the cache holds: the chains and keys are the cache's own bytes (they
// never change, and marshalling only reads them), and every SVID of the
// response shares one copy of the bundle. A workload with 10,000 SVIDs
// held a copy of each chain in its last response and another in the one
// being composed.
func composeX509SVIDResponse(update *cache.WorkloadUpdate, ids []cache.Identity) (*workload.X509SVIDResponse, error) {
	if update.Bundle == nil {
		return nil, errors.New("bundle not available")
	}
	bundle := concatDER(update.Bundle.X509Authorities())
	resp := &workload.X509SVIDResponse{FederatedBundles: make(map[string][]byte, len(update.FederatedBundles))}
	for td, b := range update.FederatedBundles {
		resp.FederatedBundles[td.IDString()] = concatDER(b.X509Authorities())
	}
	// One allocation for all the messages, not one each.
	svids := make([]workload.X509SVID, len(ids))
	resp.Svids = make([]*workload.X509SVID, len(ids))
	for i, id := range ids {
		// The cache serves an SVID only while its leaf's ID is the
		// entry's (the same string), and the held ID needs no new one.
		sid := id.SVID.ID()
		if sid.IsZero() {
			var err error
			if sid, err = entryID(id.Entry); err != nil {
				return nil, err
			}
		}
		svid := &svids[i]
		svid.SpiffeId = sid.String()
		svid.X509Svid = id.SVID.Chain()
		svid.X509SvidKey = id.SVID.PrivateKey()
		svid.Bundle = bundle
		svid.Hint = id.Entry.GetHint()
		resp.Svids[i] = svid
	}
	return resp, nil
}

func composeJWTBundlesResponse(update *cache.WorkloadUpdate) (*workload.JWTBundlesResponse, error) {
	if update.Bundle == nil {
		return nil, errors.New("bundle not available")
	}
	resp := &workload.JWTBundlesResponse{Bundles: make(map[string][]byte, 1+len(update.FederatedBundles))}
	jwks, err := marshalJWKS(update.Bundle.JWTBundle())
	if err != nil {
		return nil, err
	}
	resp.Bundles[update.Bundle.TrustDomain().IDString()] = jwks
	for td, b := range update.FederatedBundles {
		jwks, err := marshalJWKS(b.JWTBundle())
		if err != nil {
			return nil, err
		}
		resp.Bundles[td.IDString()] = jwks
	}
	return resp, nil
}

// marshalJWKS renders a JWT bundle byte for byte as SPIRE's agent does
// (indented by four spaces): `spire-agent api fetch jwt` prints these bytes
// as they come.
func marshalJWKS(b *jwtbundle.Bundle) ([]byte, error) {
	compact, err := b.Marshal()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact, "", "    "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func concatDER(certs []*x509.Certificate) []byte {
	n := 0
	for _, c := range certs {
		n += len(c.Raw)
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

// structFromClaims goes through JSON because structpb only knows []any, not
// the typed slices a JWT library may hand back.
func structFromClaims(claims map[string]any) (*structpb.Struct, error) {
	b, err := json.Marshal(claims)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}
