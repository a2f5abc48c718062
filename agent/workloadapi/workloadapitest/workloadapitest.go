// Package workloadapitest provides a real test CA and an in-memory Manager
// holding real SVIDs, for tests of the Workload API server and its clients.
package workloadapitest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe-hw/spire-hw/agent/cache"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// CA is a real CA: it signs X.509-SVIDs and JWT-SVIDs.
type CA struct {
	TD      spiffeid.TrustDomain
	Cert    *x509.Certificate
	key     crypto.Signer
	JWTKey  crypto.Signer
	JWTKID  string
	serial  int64
	serialM sync.Mutex
}

// NewCA makes a self-signed CA and a JWT signing key for td.
func NewCA(t testing.TB, td spiffeid.TrustDomain) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA " + td.Name()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{TD: td, Cert: cert, key: key, JWTKey: jwtKey, JWTKID: "kid-" + td.Name(), serial: 100}
}

// Bundle is the CA's trust bundle (X.509 and JWT authorities).
func (ca *CA) Bundle() *spiffebundle.Bundle {
	b := spiffebundle.New(ca.TD)
	b.AddX509Authority(ca.Cert)
	if err := b.AddJWTAuthority(ca.JWTKID, ca.JWTKey.Public()); err != nil {
		panic(err)
	}
	return b
}

// Issue signs an X.509-SVID for path in the CA's trust domain.
func (ca *CA) Issue(t testing.TB, path string) cache.Identity {
	t.Helper()
	id, err := spiffeid.FromPath(ca.TD, path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serialM.Lock()
	ca.serial++
	serial := ca.serial
	ca.serialM.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(30 * time.Minute),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := cache.NewX509SVID([]*x509.Certificate{cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	return cache.Identity{
		Entry: &types.Entry{
			Id:       fmt.Sprintf("entry-%d", serial),
			SpiffeId: &types.SPIFFEID{TrustDomain: ca.TD.Name(), Path: path},
		},
		SVID: svid,
	}
}

// SignJWT signs a JWT-SVID with key (the CA's JWT key, or another one to
// forge a token).
func SignJWT(t testing.TB, key crypto.Signer, kid string, sub spiffeid.ID, aud []string, extra map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b := jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  sub.String(),
		Audience: aud,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
	})
	if extra != nil {
		b = b.Claims(extra)
	}
	tok, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Manager is an in-memory workloadapi.Manager holding real SVIDs: an identity is
// visible to a caller whose selectors include all the entry's selectors.
type Manager struct {
	t  testing.TB
	ca *CA

	mu         sync.Mutex
	identities []cache.Identity
	// bare are entries without an X.509-SVID (SetEntry).
	bare      []*types.Entry
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	subs      map[*subscription]struct{}
	jwtCalls  int
	lastSels  [][]*types.Selector
}

// NewManager returns an empty Manager whose bundle is ca's.
func NewManager(t testing.TB, ca *CA) *Manager {
	return &Manager{t: t, ca: ca, subs: map[*subscription]struct{}{}}
}

type subscription struct {
	m    *Manager
	sels []*types.Selector
	ch   chan *cache.WorkloadUpdate
	once sync.Once
}

func (s *subscription) Updates() <-chan *cache.WorkloadUpdate { return s.ch }
func (s *subscription) Finish() {
	s.once.Do(func() {
		s.m.mu.Lock()
		delete(s.m.subs, s)
		s.m.mu.Unlock()
	})
}

// push replaces any unread update with the latest one.
func (s *subscription) push(u *cache.WorkloadUpdate) {
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

func subset(entry, caller []*types.Selector) bool {
	for _, e := range entry {
		found := false
		for _, c := range caller {
			if e.Type == c.Type && e.Value == c.Value {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (m *Manager) updateLocked(sels []*types.Selector) *cache.WorkloadUpdate {
	u := &cache.WorkloadUpdate{Bundle: m.ca.Bundle(), FederatedBundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	for _, id := range m.identities {
		if subset(id.Entry.Selectors, sels) {
			u.Identities = append(u.Identities, id)
			u.Entries = append(u.Entries, id.Entry)
		}
	}
	for _, e := range m.bare {
		if subset(e.Selectors, sels) {
			u.Entries = append(u.Entries, e)
		}
	}
	for td, b := range m.federated {
		u.FederatedBundles[td] = b
	}
	return u
}

// SubscribeToCacheChanges implements workloadapi.Manager.
func (m *Manager) SubscribeToCacheChanges(_ context.Context, sels []*types.Selector) (cache.Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSels = append(m.lastSels, sels)
	s := &subscription{m: m, sels: sels, ch: make(chan *cache.WorkloadUpdate, 1)}
	m.subs[s] = struct{}{}
	s.push(m.updateLocked(sels))
	return s, nil
}

// FetchWorkloadUpdate implements workloadapi.Manager.
func (m *Manager) FetchWorkloadUpdate(sels []*types.Selector) *cache.WorkloadUpdate {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSels = append(m.lastSels, sels)
	return m.updateLocked(sels)
}

// FetchJWTSVID implements workloadapi.Manager; it signs a fresh token.
func (m *Manager) FetchJWTSVID(_ context.Context, entry *types.Entry, aud []string) (*cache.JWTSVID, error) {
	m.mu.Lock()
	m.jwtCalls++
	m.mu.Unlock()
	id, err := spiffeid.FromPath(spiffeid.RequireTrustDomainFromString(entry.SpiffeId.TrustDomain), entry.SpiffeId.Path)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &cache.JWTSVID{Token: SignJWT(m.t, m.ca.JWTKey, m.ca.JWTKID, id, aud, nil), IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)}, nil
}

// Set replaces the identity for the entry with the same path (or adds it)
// and notifies subscribers.
func (m *Manager) Set(id cache.Identity, sels ...*types.Selector) {
	id.Entry.Selectors = sels
	m.mu.Lock()
	defer m.mu.Unlock()
	replaced := false
	for i, old := range m.identities {
		if old.Entry.SpiffeId.Path == id.Entry.SpiffeId.Path {
			m.identities[i] = id
			replaced = true
		}
	}
	if !replaced {
		m.identities = append(m.identities, id)
	}
	for s := range m.subs {
		s.push(m.updateLocked(s.sels))
	}
}

// SetEntry adds an entry that holds no X.509-SVID, as the agent's entries
// beyond x509_svid_cache_max_size may not: workloads it matches get
// JWT-SVIDs for it, not X.509-SVIDs.
func (m *Manager) SetEntry(path string, sels ...*types.Selector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bare = append(m.bare, &types.Entry{
		Id:        "bare" + path,
		SpiffeId:  &types.SPIFFEID{TrustDomain: m.ca.TD.Name(), Path: path},
		Selectors: sels,
	})
}

// JWTCalls counts FetchJWTSVID calls so far.
func (m *Manager) JWTCalls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jwtCalls
}
