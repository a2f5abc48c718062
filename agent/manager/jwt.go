package manager

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/agent/cache"
)

// jwtKey identifies a cached JWT-SVID: one per SPIFFE ID and audience set,
// whatever order the audience was asked in.
func jwtKey(id string, audience []string) string {
	aud := slices.Clone(audience)
	slices.Sort(aud)
	aud = slices.Compact(aud)
	return id + "\x00" + strings.Join(aud, "\x00")
}

// FetchJWTSVID implements workloadapi.Manager. The entry must be one the
// agent is authorized for. Errors are gRPC statuses: InvalidArgument for a
// bad request, NotFound for an unknown entry, and the server's status (often
// Unavailable) when a new token cannot be obtained.
func (m *Manager) FetchJWTSVID(ctx context.Context, entry *types.Entry, audience []string) (*cache.JWTSVID, error) {
	if len(audience) == 0 || slices.Contains(audience, "") {
		return nil, status.Error(codes.InvalidArgument, "manager: at least one non-empty audience is required")
	}
	if entry == nil {
		return nil, status.Error(codes.InvalidArgument, "manager: no entry")
	}
	current, ok := m.cache.Entry(entry.Id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "manager: entry %q is not authorized for this agent", entry.Id)
	}
	id, err := cache.EntryID(current)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	key := jwtKey(id.String(), audience)
	now := m.clock()
	cached, ok := m.jwts.get(key)
	// A token signed by a key the bundle marks tainted is minted again.
	if ok && !pastHalfLife(cached.IssuedAt, cached.ExpiresAt, now) && !m.tainted().jwtTainted(cached.Token) {
		return cached, nil
	}

	resp, err := m.client.NewJWTSVID(ctx, current.Id, audience)
	if err != nil {
		if _, isStatus := status.FromError(err); isStatus {
			return nil, err
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	// The server signed it; check that it names what we asked for so that
	// a confused server cannot hand a workload someone else's identity.
	parsed, err := jwtsvid.ParseInsecure(resp.Token, audience)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "manager: server returned an unusable JWT-SVID: %v", err)
	}
	if parsed.ID != id {
		return nil, status.Errorf(codes.Internal, "manager: server returned a JWT-SVID for %q, want %q", parsed.ID, id)
	}
	issued := time.Unix(resp.IssuedAt, 0)
	if resp.IssuedAt == 0 {
		issued = now
	}
	svid := &cache.JWTSVID{Token: resp.Token, IssuedAt: issued, ExpiresAt: parsed.Expiry}
	m.jwts.put(key, svid, now)
	return svid, nil
}

// pruneJWTs forgets tokens of SPIFFE IDs no entry issues any more.
func (m *Manager) pruneJWTs(entries []*types.Entry) {
	live := map[string]bool{}
	for _, e := range entries {
		if id, err := cache.EntryID(e); err == nil {
			live[id.String()] = true
		}
	}
	m.jwts.keep(live)
}
