package gcpiit

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

const maxDocument = 1 << 20

// Bounds on how long a certs document is trusted to stay current,
// whatever its Expires header says.
const (
	minCertsTTL     = time.Minute
	maxCertsTTL     = 24 * time.Hour
	defaultCertsTTL = time.Hour
)

var errKeyNotFound = errors.New("key ID not in the certificate set")

// certSet caches Google's signing keys (kid -> certificate) until the
// Expires time of the response that carried them. A failed refresh keeps
// the known keys; an unknown kid triggers a rate-limited refresh.
type certSet struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey
	expires   time.Time
	attempted time.Time
}

func (s *certSet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	k, ok := s.keys[kid]
	if s.keys == nil || !now.Before(s.expires) || (!ok && now.Sub(s.attempted) >= 30*time.Second) {
		s.attempted = now
		keys, ttl, err := s.fetch(ctx)
		switch {
		case err == nil:
			s.keys, s.expires = keys, now.Add(ttl)
			k, ok = keys[kid]
		case s.keys == nil:
			return nil, err
		}
	}
	if !ok {
		return nil, errKeyNotFound
	}
	return k, nil
}

func (s *certSet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("certs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("certs: GET %s: %s", s.url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, 0, fmt.Errorf("certs: %w", err)
	}
	if len(b) > maxDocument {
		return nil, 0, errors.New("certs: document too large")
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, 0, fmt.Errorf("certs: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(m))
	for kid, p := range m {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if k, ok := c.PublicKey.(*rsa.PublicKey); ok {
			keys[kid] = k
		}
	}
	ttl := defaultCertsTTL
	if exp, err := http.ParseTime(resp.Header.Get("Expires")); err == nil {
		ttl = min(max(exp.Sub(s.now()), minCertsTTL), maxCertsTTL)
	}
	return keys, ttl, nil
}
