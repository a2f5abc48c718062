package admin

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Manager is what GetInfo reports on (agent/manager.Manager).
type Manager interface {
	// AgentSVID is the agent's X509-SVID, nil before attestation.
	AgentSVID() *x509svid.SVID
	// Bundle is the trust domain's bundle, nil before the agent has one.
	Bundle() *spiffebundle.Bundle
	CountX509SVIDs() int
	CountJWTSVIDs() int
	CountSVIDStoreX509SVIDs() int
	// LastSync is the last successful round with the server (zero: none).
	LastSync() time.Time
}

// infoTTL is how long a GetInfo answer is reused, as SPIRE's: verifying
// the chain and counting the caches on every call would let a caller in a
// loop make the agent do that work without end.
const infoTTL = 5 * time.Second

// debugService implements spire.agent.debug.v1.Debug.
type debugService struct {
	debugv1.UnimplementedDebugServer
	m      Manager
	td     spiffeid.TrustDomain
	uptime func() time.Duration
	clock  func() time.Time
	log    *slog.Logger

	mu   sync.Mutex
	resp *debugv1.GetInfoResponse
	at   time.Time
}

func newDebugService(cfg Config) *debugService {
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	uptime := cfg.Uptime
	if uptime == nil {
		start := clock()
		uptime = func() time.Duration { return clock().Sub(start) }
	}
	return &debugService{m: cfg.Manager, td: cfg.TrustDomain, uptime: uptime, clock: clock,
		log: cfg.log().With("subsystem", "debug_api")}
}

func registerDebug(s grpc.ServiceRegistrar, d *debugService) { debugv1.RegisterDebugServer(s, d) }

// GetInfo implements debug/v1 with SPIRE's fields. last_sync_success is 0
// until the agent has reached the server (SPIRE sends the Unix time of Go's
// zero time then).
func (d *debugService) GetInfo(context.Context, *debugv1.GetInfoRequest) (*debugv1.GetInfoResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock()
	if d.resp != nil && now.Sub(d.at) < infoTTL {
		return d.resp, nil
	}
	chain, err := d.chain(now)
	if err != nil {
		d.log.Error("Failed to verify agent SVID", "error", err)
		return nil, status.Errorf(codes.Internal, "failed to verify agent SVID: %v", err)
	}
	resp := &debugv1.GetInfoResponse{}
	for _, c := range chain {
		resp.SvidChain = append(resp.SvidChain, &debugv1.GetInfoResponse_Cert{
			Id: certID(c), ExpiresAt: c.NotAfter.Unix(), Subject: c.Subject.String(),
		})
	}
	for _, f := range []struct {
		what string
		v    int64
		dst  *int32
	}{
		{"uptime", int64(d.uptime().Seconds()), &resp.Uptime},
		{"X.509 SVIDs count", int64(d.m.CountX509SVIDs()), &resp.CachedX509SvidsCount},
		{"JWT SVIDs count", int64(d.m.CountJWTSVIDs()), &resp.CachedJwtSvidsCount},
		{"SVIDStore X.509 SVIDs count", int64(d.m.CountSVIDStoreX509SVIDs()), &resp.CachedSvidstoreX509SvidsCount},
	} {
		if f.v < math.MinInt32 || f.v > math.MaxInt32 {
			return nil, status.Errorf(codes.Internal, "out of range value for %s: %d", f.what, f.v)
		}
		*f.dst = int32(f.v)
	}
	//lint:ignore SA1019 deprecated, and still sent, as SPIRE sends it
	resp.SvidsCount = resp.CachedX509SvidsCount
	if last := d.m.LastSync(); !last.IsZero() {
		resp.LastSyncSuccess = last.Unix()
	}
	d.resp, d.at = resp, now
	return resp, nil
}

// chain is the agent SVID's chain from leaf to root, verified against
// the trust domain's bundle at now.
func (d *debugService) chain(now time.Time) ([]*x509.Certificate, error) {
	svid := d.m.AgentSVID()
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, errNoSVID
	}
	b := d.m.Bundle()
	if b == nil {
		return nil, fmt.Errorf("no bundle for %s", d.td)
	}
	src := x509bundle.FromX509Authorities(d.td, b.X509Authorities())
	_, chains, err := x509svid.Verify(svid.Certificates, src, x509svid.WithTime(now))
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// certID is a certificate's SPIFFE ID, or nil for a CA without one.
func certID(c *x509.Certificate) *types.SPIFFEID {
	id, err := x509svid.IDFromCert(c)
	if err != nil {
		return nil
	}
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}
