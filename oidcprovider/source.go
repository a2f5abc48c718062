package oidcprovider

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
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// pollTimeout bounds one fetch, so that a source that stops answering
// delays the next poll instead of stopping polling.
const pollTimeout = 30 * time.Second

// keySource is what the handlers need from a source of JWT authorities.
type keySource interface {
	// KeySet returns the current keys and when they last changed; ok is
	// false until a first fetch succeeded.
	KeySet() (keys []jose.JSONWebKey, modTime time.Time, ok bool)
	// LastSuccessfulPoll is the time of the last successful fetch (zero
	// before the first).
	LastSuccessfulPoll() time.Time
}

// errLogged marks a fetch error its fetchFunc has already logged.
var errLogged = errors.New("already logged")

// fetchFunc fetches the authorities once. An error keeps the previous set.
type fetchFunc func(ctx context.Context) ([]jose.JSONWebKey, error)

// poller keeps the last key set a fetchFunc returned, fetching it every
// interval until Close.
type poller struct {
	log      *slog.Logger
	fetch    fetchFunc
	failMsg  string // SPIRE's warning for a failed fetch of this source
	interval time.Duration
	now      func() time.Time
	cancel   context.CancelFunc
	done     chan struct{}
	// polled, when set by a test, is told after each poll.
	polled chan<- struct{}

	mu       sync.RWMutex
	keys     []jose.JSONWebKey
	raw      []byte // canonical form of keys, to tell a change
	modTime  time.Time
	pollTime time.Time
}

func newPoller(log *slog.Logger, interval time.Duration, failMsg string, fetch fetchFunc) *poller {
	return &poller{log: log, fetch: fetch, failMsg: failMsg, interval: interval, now: time.Now, done: make(chan struct{})}
}

// start polls in the background until Close; the first poll is at once.
func (p *poller) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(ctx)
}

func (p *poller) run(ctx context.Context) {
	defer close(p.done)
	p.log.Debug("Polling started", "interval", p.interval)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.log.Debug("Polling done", "error", ctx.Err())
			return
		case <-t.C:
		}
		p.pollOnce(ctx)
		if p.polled != nil {
			select {
			case p.polled <- struct{}{}:
			default:
			}
		}
		t.Reset(p.interval)
	}
}

func (p *poller) pollOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	keys, err := p.fetch(ctx)
	if err != nil {
		if !errors.Is(err, errLogged) && (ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded)) {
			p.log.Warn(p.failMsg, "error", err)
		}
		return
	}
	p.set(keys)
}

// set records a successful fetch; the modification time moves only when
// the keys changed, so that conditional GETs of /keys keep answering 304.
func (p *poller) set(keys []jose.JSONWebKey) {
	slices.SortFunc(keys, func(a, b jose.JSONWebKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	raw, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	now := p.now()
	if err != nil {
		p.log.Error("Failed to marshal JWKS", "error", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pollTime = now
	if p.raw != nil && bytes.Equal(p.raw, raw) {
		return
	}
	p.keys, p.raw, p.modTime = keys, raw, now
}

func (p *poller) KeySet() ([]jose.JSONWebKey, time.Time, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.raw == nil {
		return nil, time.Time{}, false
	}
	return slices.Clone(p.keys), p.modTime, true
}

func (p *poller) LastSuccessfulPoll() time.Time {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.pollTime
}

// Close stops polling and waits for the poll in flight.
func (p *poller) Close() error {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return nil
}

// serverAPIFetch fetches the JWT authorities of the server's own bundle
// over its admin socket (bundle/v1 GetBundle); conn is owned by the caller.
func serverAPIFetch(log *slog.Logger, conn *grpc.ClientConn) fetchFunc {
	client := bundlev1.NewBundleClient(conn)
	return func(ctx context.Context) ([]jose.JSONWebKey, error) {
		b, err := client.GetBundle(ctx, &bundlev1.GetBundleRequest{OutputMask: &types.BundleMask{JwtAuthorities: true}})
		if err != nil {
			return nil, fmt.Errorf("server API: get bundle: %w", err)
		}
		keys := make([]jose.JSONWebKey, 0, len(b.GetJwtAuthorities()))
		for _, a := range b.GetJwtAuthorities() {
			pub, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
			if err != nil {
				log.Warn("Malformed public key in bundle", "kid", a.GetKeyId(), "error", err)
				continue
			}
			keys = append(keys, jose.JSONWebKey{Key: pub, KeyID: a.GetKeyId()})
		}
		return keys, nil
	}
}

// dialServerAPI opens the client connection to a "unix:" gRPC target.
func dialServerAPI(target string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("server API: %w", err)
	}
	return conn, nil
}

// workloadAPIFetch fetches the trust domain's JWT bundle from the Workload
// API; client is owned by the caller.
func workloadAPIFetch(log *slog.Logger, client *workloadapi.Client, td spiffeid.TrustDomain) fetchFunc {
	return func(ctx context.Context) ([]jose.JSONWebKey, error) {
		set, err := client.FetchJWTBundles(ctx)
		if err != nil {
			return nil, fmt.Errorf("workload API: fetch JWT bundles: %w", err)
		}
		b, ok := set.Get(td)
		if !ok {
			log.Error("No bundle for trust domain in Workload API response", "trust_domain_id", td.IDString())
			return nil, fmt.Errorf("workload API: no bundle for trust domain %q: %w", td.Name(), errLogged)
		}
		return keysOf(b.JWTAuthorities()), nil
	}
}

// fileFetch reads the JWT authorities of a SPIFFE bundle file.
func fileFetch(path string) fetchFunc {
	return func(context.Context) ([]jose.JSONWebKey, error) {
		// The trust domain only labels the bundle; the file's keys are
		// served whatever domain they belong to, as SPIRE does.
		b, err := spiffebundle.Load(spiffeid.TrustDomain{}, path)
		if err != nil {
			return nil, fmt.Errorf("file: %w", err)
		}
		return keysOf(b.JWTAuthorities()), nil
	}
}

func keysOf[K any](m map[string]K) []jose.JSONWebKey {
	keys := make([]jose.JSONWebKey, 0, len(m))
	for kid, k := range m {
		keys = append(keys, jose.JSONWebKey{Key: k, KeyID: kid})
	}
	return keys
}
