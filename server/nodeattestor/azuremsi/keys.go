package azuremsi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxDocument bounds discovery and JWKS documents.
const maxDocument = 1 << 20

// keySet caches the signing keys found by OIDC discovery. A refresh that
// fails keeps the keys already known, so an outage of the discovery
// endpoint does not stop attestation; an unknown key ID triggers a
// refresh, rate-limited, so a rotation is picked up without waiting for
// the interval.
type keySet struct {
	discoveryURL string
	client       *http.Client
	interval     time.Duration
	minInterval  time.Duration
	now          func() time.Time

	mu        sync.Mutex
	keys      map[string]jose.JSONWebKey
	fetched   time.Time // last successful refresh
	attempted time.Time // last refresh attempt
}

// key returns the key with ID kid.
func (s *keySet) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	stale := s.keys == nil || now.Sub(s.fetched) >= s.interval
	k, ok := s.keys[kid]
	if stale || (!ok && now.Sub(s.attempted) >= s.minInterval) {
		s.attempted = now
		keys, err := s.fetch(ctx)
		switch {
		case err == nil:
			s.keys, s.fetched = keys, now
			k, ok = keys[kid]
		case s.keys == nil:
			return jose.JSONWebKey{}, err
		}
	}
	if !ok {
		return jose.JSONWebKey{}, errKeyNotFound
	}
	return k, nil
}

var errKeyNotFound = errors.New("key ID not in the key set")

func (s *keySet) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	var disc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := s.getJSON(ctx, s.discoveryURL, &disc); err != nil {
		return nil, fmt.Errorf("OIDC discovery: %w", err)
	}
	if disc.JWKSURI == "" {
		return nil, errors.New("OIDC discovery: no jwks_uri")
	}
	var set jose.JSONWebKeySet
	if err := s.getJSON(ctx, disc.JWKSURI, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.KeyID != "" && k.Valid() && k.IsPublic() {
			keys[k.KeyID] = k
		}
	}
	return keys, nil
}

func (s *keySet) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return err
	}
	if len(b) > maxDocument {
		return fmt.Errorf("GET %s: document too large", url)
	}
	return json.Unmarshal(b, v)
}
