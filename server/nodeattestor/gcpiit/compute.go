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
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// serviceAccount authenticates to the Compute API with a service account
// key file: it signs a JWT assertion and trades it for an access token
// at the file's token_uri (RFC 7523).
type serviceAccount struct {
	email, tokenURI string
	key             *rsa.PrivateKey
	client          *http.Client
	now             func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// loadServiceAccount reads a service account key file.
func loadServiceAccount(path string) (*serviceAccount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: service_account_file: %w", err)
	}
	var f struct {
		Type, ClientEmail, PrivateKey, TokenURI string
	}
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("gcpiit: service_account_file: %w", err)
	}
	f.Type, f.ClientEmail, f.PrivateKey, f.TokenURI = raw["type"], raw["client_email"], raw["private_key"], raw["token_uri"]
	if f.Type != "service_account" || f.ClientEmail == "" || f.TokenURI == "" {
		return nil, errors.New("gcpiit: service_account_file: not a service account key (type, client_email, token_uri)")
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	if block == nil {
		return nil, errors.New("gcpiit: service_account_file: no PEM private_key")
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("gcpiit: service_account_file: private_key: %w", err)
		}
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("gcpiit: service_account_file: private_key is not RSA")
	}
	return &serviceAccount{email: f.ClientEmail, tokenURI: f.TokenURI, key: rk}, nil
}

func (s *serviceAccount) accessToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.token != "" && now.Before(s.expires) {
		return s.token, nil
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: s.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	assertion, err := jwt.Signed(sg).Claims(map[string]any{
		"iss": s.email, "aud": s.tokenURI, "scope": "https://www.googleapis.com/auth/compute.readonly",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}).Serialize()
	if err != nil {
		return "", err
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURI, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := getJSON(s.client, req, &out); err != nil {
		return "", fmt.Errorf("service account token: %w", err)
	}
	if out.AccessToken == "" {
		return "", errors.New("service account token: no access_token")
	}
	s.token, s.expires = out.AccessToken, now.Add(time.Duration(out.ExpiresIn)*time.Second-time.Minute)
	return s.token, nil
}

// computeInstance is the part of a Compute API instance the attestor uses.
type computeInstance struct {
	Tags struct {
		Items []string `json:"items"`
	} `json:"tags"`
	Labels   map[string]string `json:"labels"`
	Metadata struct {
		Items []struct {
			Key   string  `json:"key"`
			Value *string `json:"value"`
		} `json:"items"`
	} `json:"metadata"`
	ServiceAccounts []struct {
		Email string `json:"email"`
	} `json:"serviceAccounts"`
}

func (a *Attestor) instance(ctx context.Context, project, zone, name string) (*computeInstance, error) {
	tok, err := a.sa.accessToken(ctx)
	if err != nil {
		return nil, err
	}
	u := a.cfg.ComputeEndpoint + "projects/" + url.PathEscape(project) + "/zones/" + url.PathEscape(zone) + "/instances/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	var inst computeInstance
	if err := getJSON(a.cfg.HTTPClient, req, &inst); err != nil {
		return nil, fmt.Errorf("get instance: %w", err)
	}
	return &inst, nil
}

const maxAPIResponse = 4 << 20

func getJSON(c *http.Client, req *http.Request, v any) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse+1))
	if err != nil {
		return err
	}
	if len(b) > maxAPIResponse {
		return errors.New("response too large")
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	return json.Unmarshal(b, v)
}
