package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/ca"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// memStore is an in-memory ca.Store with the datastore's documented
// semantics (AppendBundle dedups X.509 by DER and JWT by key ID; PruneBundle
// never removes the last X.509 authority).
type memStore struct {
	mu       sync.Mutex
	journals map[string]*datastore.CAJournal
	bundles  map[string]*types.Bundle
	// failJournal makes SetCAJournal fail, to test that nothing is
	// committed without the journal.
	failJournal bool
}

var _ ca.Store = (*memStore)(nil)
var _ ca.Store = datastore.DataStore(nil)

func newMemStore() *memStore {
	return &memStore{journals: map[string]*datastore.CAJournal{}, bundles: map[string]*types.Bundle{}}
}

func (s *memStore) FetchCAJournal(_ context.Context, name string) (*datastore.CAJournal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.journals[name]
	if !ok {
		return nil, fmt.Errorf("memstore: journal %q: %w", name, datastore.ErrNotFound)
	}
	c := *j
	c.Data = append([]byte(nil), j.Data...)
	return &c, nil
}

func (s *memStore) FindCAJournal(ctx context.Context, ids []string) (*datastore.CAJournal, error) {
	s.mu.Lock()
	var name string
	for _, id := range ids {
		for n, j := range s.journals {
			if id != "" && j.ActiveX509AuthorityID == id {
				name = n
			}
		}
		if name != "" {
			break
		}
	}
	s.mu.Unlock()
	if name == "" {
		return nil, fmt.Errorf("memstore: no journal for %q: %w", ids, datastore.ErrNotFound)
	}
	return s.FetchCAJournal(ctx, name)
}

func (s *memStore) SetCAJournal(_ context.Context, j *datastore.CAJournal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failJournal {
		return fmt.Errorf("memstore: journal write refused")
	}
	c := *j
	c.Data = append([]byte(nil), j.Data...)
	s.journals[j.Name] = &c
	return nil
}

func (s *memStore) PruneCAJournals(_ context.Context, expiresBefore time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name, j := range s.journals {
		if j.ExpiresAt > 0 && j.ExpiresAt < expiresBefore.Unix() {
			delete(s.journals, name)
			n++
		}
	}
	return n, nil
}

func (s *memStore) AppendBundle(_ context.Context, b *types.Bundle) (*types.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.bundles[b.TrustDomain]
	if !ok {
		cur = &types.Bundle{TrustDomain: b.TrustDomain}
		s.bundles[b.TrustDomain] = cur
	}
	changed := !ok
	for _, a := range b.X509Authorities {
		dup := false
		for _, c := range cur.X509Authorities {
			if string(c.Asn1) == string(a.Asn1) {
				dup = true
			}
		}
		if !dup {
			cur.X509Authorities = append(cur.X509Authorities, proto.Clone(a).(*types.X509Certificate))
			changed = true
		}
	}
	for _, a := range b.JwtAuthorities {
		dup := false
		for _, c := range cur.JwtAuthorities {
			if c.KeyId == a.KeyId {
				dup = true
			}
		}
		if !dup {
			cur.JwtAuthorities = append(cur.JwtAuthorities, proto.Clone(a).(*types.JWTKey))
			changed = true
		}
	}
	if changed {
		cur.SequenceNumber++
	}
	return proto.Clone(cur).(*types.Bundle), nil
}

func (s *memStore) PruneBundle(_ context.Context, td string, expiresBefore time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.bundles[td]
	if !ok {
		return false, nil
	}
	changed := false
	var keepX []*types.X509Certificate
	for _, a := range cur.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return false, err
		}
		if c.NotAfter.Before(expiresBefore) {
			changed = true
			continue
		}
		keepX = append(keepX, a)
	}
	if len(keepX) == 0 {
		return false, nil // never the last one
	}
	var keepJ []*types.JWTKey
	for _, a := range cur.JwtAuthorities {
		if a.ExpiresAt < expiresBefore.Unix() {
			changed = true
			continue
		}
		keepJ = append(keepJ, a)
	}
	cur.X509Authorities, cur.JwtAuthorities = keepX, keepJ
	if changed {
		cur.SequenceNumber++
	}
	return changed, nil
}

func (s *memStore) ModifyBundle(_ context.Context, td string, fn func(*types.Bundle) error) (*types.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.bundles[td]
	if !ok {
		return nil, fmt.Errorf("memstore: bundle %q: %w", td, datastore.ErrNotFound)
	}
	c := proto.Clone(cur).(*types.Bundle)
	if err := fn(c); err != nil {
		return nil, err
	}
	c.SequenceNumber++
	s.bundles[td] = c
	return proto.Clone(c).(*types.Bundle), nil
}

func (s *memStore) FetchBundle(_ context.Context, td string) (*types.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.bundles[td]
	if !ok {
		return nil, fmt.Errorf("memstore: bundle %q: %w", td, datastore.ErrNotFound)
	}
	return proto.Clone(cur).(*types.Bundle), nil
}

// journal returns the data of the only journal stored: the tests' CA is
// the only server.
func (s *memStore) journal(t *testing.T) []byte {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.journals) != 1 {
		t.Fatalf("%d journals stored, want 1", len(s.journals))
	}
	for _, j := range s.journals {
		return append([]byte(nil), j.Data...)
	}
	return nil
}

// x509Bundle converts the stored bundle with go-spiffe, as a relying party
// that fetched it would.
func (s *memStore) x509Bundle(t *testing.T, td spiffeid.TrustDomain) *x509bundle.Bundle {
	t.Helper()
	b, err := s.FetchBundle(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(td, certs)
}

func (s *memStore) jwtBundle(t *testing.T, td spiffeid.TrustDomain) *jwtbundle.Bundle {
	t.Helper()
	b, err := s.FetchBundle(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]crypto.PublicKey{}
	for _, a := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(a.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		keys[a.KeyId] = pub
	}
	return jwtbundle.FromJWTAuthorities(td, keys)
}

func (s *memStore) bundle(t *testing.T, td spiffeid.TrustDomain) *types.Bundle {
	t.Helper()
	b, err := s.FetchBundle(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}
