package api

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// SPIRE's per-IP limits (pkg/server/api/limits), in calls (or CSRs) per
// second; the burst equals the rate.
const (
	// AttestLimitPerIP bounds AttestAgent calls.
	AttestLimitPerIP = 1
	// SignLimitPerIP bounds signed CSRs (RenewAgent, BatchNewX509SVID
	// counted per CSR, NewDownstreamX509CA) and, separately, JWT-SVIDs
	// (NewJWTSVID).
	SignLimitPerIP = 500
	// PushJWTKeyLimitPerIP bounds PublishJWTAuthority; it is always on.
	PushJWTKeyLimitPerIP = 500
)

const (
	// maxLimitWait bounds how long a call waits for its turn. SPIRE waits
	// as long as the caller's deadline allows, which lets one address
	// that sets no deadline park any number of calls (each a goroutine
	// and a stream) behind the limiter; past this wait a call is refused
	// at once, with the error SPIRE gives a caller whose deadline is too
	// short, so at most AttestLimitPerIP*maxLimitWait attestations wait
	// per address.
	maxLimitWait = 10 * time.Second
	// limiterGCInterval is how often per-IP limiters that went unused for
	// a whole interval are dropped (as SPIRE's gcInterval).
	limiterGCInterval = time.Minute
	// maxLimiterIPs bounds the addresses tracked in one generation, so that
	// a caller spraying source addresses within one GC interval cannot
	// grow the map without limit either: a full generation is retired
	// early, and the limiters still in use are carried over on their next
	// call.
	maxLimiterIPs = 1 << 16
)

// RateLimits are SPIRE's server { ratelimit { attestation, signing } }.
// The zero value turns both off; server/config defaults both on, as SPIRE
// does. Callers on the local Unix socket are never limited.
type RateLimits struct {
	// Attestation limits AttestAgent to AttestLimitPerIP per second per
	// source IP.
	Attestation bool
	// Signing limits CSRs and JWT-SVIDs to SignLimitPerIP per second per
	// source IP.
	Signing bool
}

// The limited methods.
const (
	methodAttestAgent         = "/spire.api.server.agent.v1.Agent/AttestAgent"
	methodRenewAgent          = "/spire.api.server.agent.v1.Agent/RenewAgent"
	methodBatchNewX509SVID    = "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"
	methodNewDownstreamX509CA = "/spire.api.server.svid.v1.SVID/NewDownstreamX509CA"
	methodNewJWTSVID          = "/spire.api.server.svid.v1.SVID/NewJWTSVID"
	methodPublishJWTAuthority = "/spire.api.server.bundle.v1.Bundle/PublishJWTAuthority"
)

// methodLimit is the limit of one method: the shared per-IP limiter (nil
// when turned off by configuration), what SPIRE says when it bites, and
// how many units a request costs.
type methodLimit struct {
	limiter *perIPLimiter
	refusal string
	count   func(req any) int
}

func one(any) int { return 1 }

// newMethodLimits mirrors SPIRE's endpoints.RateLimits: which methods are
// limited, and which share a limiter (RenewAgent, BatchNewX509SVID and
// NewDownstreamX509CA draw on one per-IP budget of CSRs). Methods absent
// are not limited.
func newMethodLimits(cfg RateLimits, now func() time.Time) map[string]methodLimit {
	var attest, csr, jsr *perIPLimiter
	if cfg.Attestation {
		attest = newPerIPLimiter(AttestLimitPerIP, now)
	}
	if cfg.Signing {
		csr = newPerIPLimiter(SignLimitPerIP, now)
		jsr = newPerIPLimiter(SignLimitPerIP, now)
	}
	push := newPerIPLimiter(PushJWTKeyLimitPerIP, now)
	batchCount := func(req any) int {
		if r, ok := req.(*svidv1.BatchNewX509SVIDRequest); ok {
			return len(r.Params)
		}
		return 1
	}
	return map[string]methodLimit{
		methodAttestAgent:         {attest, "rejecting request due to attest agent rate limiting", one},
		methodRenewAgent:          {csr, "rejecting request due to renew agent rate limiting", one},
		methodBatchNewX509SVID:    {csr, "rejecting request due to certificate signing rate limiting", batchCount},
		methodNewDownstreamX509CA: {csr, "rejecting request due to downstream CA signing rate limit", one},
		methodNewJWTSVID:          {jsr, "rejecting request due to JWT signing request rate limiting", one},
		methodPublishJWTAuthority: {push, "rejecting request due to key publishing rate limiting", one},
	}
}

// rateLimit waits for method's limit, if it has one, for the caller of
// ctx. A refusal is logged, at most once per source and interval.
func (a *API) rateLimit(ctx context.Context, method string, req any) error {
	ml, ok := a.limits[method]
	if !ok || ml.limiter == nil {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	tcp, ok := p.Addr.(*net.TCPAddr)
	if !ok {
		// Local callers (the admin socket) are not limited, as in SPIRE.
		return nil
	}
	count := ml.count(req)
	err := waitN(ctx, ml.limiter.get(tcp.IP.String()), count)
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if st.Code() == codes.ResourceExhausted {
		a.sec.refused("ratelimit", tcp.IP.String()+" "+method, "Rate limit exceeded; call refused",
			"method", method, "caller_addr", tcp.String(), "caller_id", callerName(ctx),
			"count", count, "limit_per_second", ml.limiter.limit, "reason", st.Message())
	}
	return status.Errorf(st.Code(), "%s: %s", ml.refusal, st.Message())
}

// waitN waits for count units of lim, within the caller's deadline and
// maxLimitWait. The errors are SPIRE's: ResourceExhausted "rate (n)
// exceeds burst size (b)" for a request that can never fit, and
// ResourceExhausted with the rate package's message for one that cannot
// be served in time.
func waitN(ctx context.Context, lim *rate.Limiter, count int) error {
	if count <= 0 {
		return nil
	}
	if count > lim.Burst() && lim.Limit() != rate.Inf {
		return status.Errorf(codes.ResourceExhausted, "rate (%d) exceeds burst size (%d)", count, lim.Burst())
	}
	wctx := ctx
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > maxLimitWait {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, maxLimitWait)
		defer cancel()
	}
	err := lim.WaitN(wctx, count)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Only our own bound ran out while waiting.
		return status.Error(codes.ResourceExhausted, "rate: Wait(n) would exceed the server's wait bound")
	default:
		return status.Error(codes.ResourceExhausted, err.Error())
	}
}

// perIPLimiter keeps one token bucket per source IP. Limiters live in two
// generations: a lookup moves a limiter from the previous generation to
// the current one, and when the current one is a GC interval old (or
// full) it becomes the previous one, dropping whatever was not used
// since. Memory is therefore bounded by 2*maxIPs limiters.
type perIPLimiter struct {
	limit  int
	maxIPs int // maxLimiterIPs; smaller in tests
	now    func() time.Time

	mu       sync.Mutex
	current  map[string]*rate.Limiter
	previous map[string]*rate.Limiter
	lastGC   time.Time
}

func newPerIPLimiter(limit int, now func() time.Time) *perIPLimiter {
	return &perIPLimiter{limit: limit, maxIPs: maxLimiterIPs, now: now, current: make(map[string]*rate.Limiter), lastGC: now()}
}

func (l *perIPLimiter) get(ip string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.current[ip]; ok {
		return lim
	}
	if lim, ok := l.previous[ip]; ok {
		delete(l.previous, ip)
		l.current[ip] = lim
		return lim
	}
	if now := l.now(); now.Sub(l.lastGC) >= limiterGCInterval || len(l.current) >= l.maxIPs {
		l.previous, l.current, l.lastGC = l.current, make(map[string]*rate.Limiter), now
	}
	lim := rate.NewLimiter(rate.Limit(l.limit), l.limit)
	l.current[ip] = lim
	return lim
}

// size returns the limiters held in both generations.
func (l *perIPLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.current) + len(l.previous)
}
