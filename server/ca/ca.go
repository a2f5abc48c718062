// Package ca is the server's certificate authority: it keeps an X.509 CA and
// a JWT signing key in two slots each (A and B), rotates them the way SPIRE
// does, and signs X.509-SVIDs and JWT-SVIDs exactly as the SPIFFE
// specifications require.
//
// Rotation: when the active CA (or JWT key) has lived half of its lifetime,
// a successor is prepared in the other slot and its trust anchor published in
// the trust bundle; at five sixths it becomes active (or earlier, when the
// current one expires). The gap gives every relying party time to fetch the
// new bundle before anything signed by the new authority reaches it.
// Expired authorities are pruned from the bundle. The slots are recorded in
// a journal in the datastore so that a restarted server keeps using the CA
// whose key is still in the key manager.
//
// An operator can also force a rotation (authority.go, behind
// localauthority/v1): prepare and activate a successor at once, then taint
// the old authority in the bundle, which makes agents re-sign what chains
// to it, and revoke it, which removes it from the bundle.
package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/ca/upstream"
	"github.com/spiffe-hw/spire-hw/server/credentialcomposer"
	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/server/keymanager"
	"github.com/spiffe-hw/spire-hw/telemetry"
)

// Defaults, as in SPIRE (ca_ttl, default_x509_svid_ttl, default_jwt_svid_ttl).
const (
	DefaultCATTL       = 24 * time.Hour
	DefaultX509SVIDTTL = time.Hour
	DefaultJWTSVIDTTL  = 5 * time.Minute
)

// backdate is subtracted from NotBefore to absorb clock skew between the
// server and relying parties.
const backdate = 10 * time.Second

var (
	// ErrInvalidParams marks a signing request the caller got wrong (foreign
	// trust domain, missing audience, ...); API handlers map it to
	// InvalidArgument.
	ErrInvalidParams = errors.New("ca: invalid parameters")
	// ErrKeyMismatch reports that a key in the key manager is not the key the
	// journal recorded for its slot: the key was replaced behind the
	// server's back, and using it would sign with an unpublished key.
	ErrKeyMismatch = errors.New("ca: key does not match the journal")
)

// Store is what the CA needs from the datastore; datastore.DataStore
// satisfies it. FetchCAJournal and FindCAJournal must return an error
// wrapping datastore.ErrNotFound when nothing matches.
type Store interface {
	FetchCAJournal(ctx context.Context, name string) (*datastore.CAJournal, error)
	FindCAJournal(ctx context.Context, activeX509AuthorityIDs []string) (*datastore.CAJournal, error)
	SetCAJournal(ctx context.Context, j *datastore.CAJournal) error
	PruneCAJournals(ctx context.Context, expiresBefore time.Time) (int, error)
	AppendBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error)
	PruneBundle(ctx context.Context, trustDomain string, expiresBefore time.Time) (bool, error)
	FetchBundle(ctx context.Context, trustDomain string) (*types.Bundle, error)
	// ModifyBundle changes the bundle in one transaction (taint, revoke).
	ModifyBundle(ctx context.Context, trustDomain string, fn func(b *types.Bundle) error) (*types.Bundle, error)
}

// Config configures a Manager. Zero durations and key types take SPIRE's
// defaults.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	KeyManager  keymanager.KeyManager
	// Upstream signs the CA certificates; nil makes the CA a self-signed
	// root. When it also implements upstream.JWTKeyPublisher, JWT keys are
	// published through it.
	Upstream upstream.Authority
	Store    Store

	CATTL       time.Duration // lifetime of each CA and JWT signing key
	X509SVIDTTL time.Duration // default X.509-SVID lifetime
	JWTSVIDTTL  time.Duration // default JWT-SVID lifetime

	CAKeyType  keymanager.KeyType
	JWTKeyType keymanager.KeyType
	// CASubject is the CA certificate's subject; empty means C=US, O=SPIFFE
	// (SPIRE's default ca_subject).
	CASubject pkix.Name
	// JWTIssuer, when set, becomes the iss claim of every JWT-SVID.
	JWTIssuer string
	// Composers amend the CA certificates and SVIDs before they are signed,
	// in this order, each getting the previous one's output. The result is
	// checked as SPIRE checks it: a composer can add to a credential but
	// not change whom it names or what it may be used for.
	Composers []credentialcomposer.Composer

	Clock func() time.Time // nil means time.Now
	Log   *slog.Logger     // nil discards
	// Metrics receives SPIRE's ca.manager and server_ca metrics (nil drops).
	Metrics *telemetry.Metrics
}

// Manager owns the CA slots. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config

	// rotateMu serializes Rotate, so one rotation step at a time decides,
	// persists and commits slot changes.
	rotateMu sync.Mutex

	mu   sync.RWMutex // guards the slot arrays; slots are immutable values
	x509 [2]*x509Slot
	jwt  [2]*jwtSlot

	// journalName is the row of this server's journal among those of
	// every server sharing the datastore; "" until first written. Guarded
	// by rotateMu, as every write of the journal.
	journalName string
	// journalsPruned is when expired journals were last pruned.
	journalsPruned time.Time

	// jwtUnsupportedOnce keeps the warning about an upstream that cannot
	// publish JWT keys to one per process, as SPIRE does.
	jwtUnsupportedOnce sync.Once

	// taintedCh signals X509AuthorityTainted's reader.
	taintedCh chan struct{}
}

// New finds this server's journal (the one whose active X.509 CA key the
// key manager holds), checks that the recorded keys are still the ones in
// the key manager, and runs one rotation step, so that the returned Manager
// has an active X.509 CA and JWT key. A key swapped behind the journal's
// back is an error wrapping ErrKeyMismatch; when the active X.509 CA's own
// key was swapped the journal cannot be told from another server's, and
// the CA starts afresh, as SPIRE's does.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.KeyManager == nil {
		return nil, errors.New("ca: key manager is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("ca: store is required")
	}
	if cfg.CATTL < 0 || cfg.X509SVIDTTL < 0 || cfg.JWTSVIDTTL < 0 {
		return nil, errors.New("ca: TTLs must not be negative")
	}
	if !cfg.CAKeyType.Valid() || !cfg.JWTKeyType.Valid() {
		return nil, fmt.Errorf("ca: unsupported key type (ca %s, jwt %s)", cfg.CAKeyType, cfg.JWTKeyType)
	}
	if cfg.CATTL == 0 {
		cfg.CATTL = DefaultCATTL
	}
	if cfg.X509SVIDTTL == 0 {
		cfg.X509SVIDTTL = DefaultX509SVIDTTL
	}
	if cfg.JWTSVIDTTL == 0 {
		cfg.JWTSVIDTTL = DefaultJWTSVIDTTL
	}
	if cfg.CASubject.String() == "" {
		cfg.CASubject = pkix.Name{Country: []string{"US"}, Organization: []string{"SPIFFE"}}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.X509SVIDTTL > cfg.CATTL/2 || cfg.JWTSVIDTTL > cfg.CATTL/2 {
		// SVIDs are capped at the CA's expiry, so they would come out
		// shorter than asked for during the second half of a CA's life.
		cfg.Log.Warn("ca: SVID TTL exceeds half of the CA TTL; SVIDs will be shortened near CA expiry",
			"ca_ttl", cfg.CATTL, "x509_svid_ttl", cfg.X509SVIDTTL, "jwt_svid_ttl", cfg.JWTSVIDTTL)
	}

	m := &Manager{cfg: cfg, taintedCh: make(chan struct{}, 1)}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	if err := m.Rotate(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// X509Authorities returns the trust anchors of the active and prepared CAs,
// as published in the bundle: the CA certificates themselves when
// self-signed, the upstream roots otherwise.
func (m *Manager) X509Authorities() []*x509.Certificate {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*x509.Certificate
	for _, s := range m.x509 {
		if s == nil || s.status == statusOld {
			continue
		}
		for _, r := range s.roots {
			if !containsCert(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// ActiveX509CA returns the certificate of the CA that signs X.509-SVIDs now.
func (m *Manager) ActiveX509CA() *x509.Certificate {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if s := activeOf(m.x509[:]); s != nil {
		return s.cert
	}
	return nil
}

// JWTKeyID returns the key ID (the kid published in the bundle) of the key
// that signs JWT-SVIDs now.
func (m *Manager) JWTKeyID() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if s := activeOf(m.jwt[:]); s != nil {
		return s.kid
	}
	return ""
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	for _, s := range set {
		if s.Equal(c) {
			return true
		}
	}
	return false
}
