package oidcprovider

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// staticSource is a keySource holding a fixed set.
type staticSource struct {
	keys    []jose.JSONWebKey
	mod     time.Time
	ok      bool
	lastRun time.Time
}

func (s *staticSource) KeySet() ([]jose.JSONWebKey, time.Time, bool) {
	return append([]jose.JSONWebKey(nil), s.keys...), s.mod, s.ok
}
func (s *staticSource) LastSuccessfulPoll() time.Time { return s.lastRun }

func testHandler(t *testing.T, src keySource, c handlerConfig) *handler {
	t.Helper()
	if c.policy == nil {
		var err error
		if c.policy, err = allowDomains("localhost", "domain.test"); err != nil {
			t.Fatal(err)
		}
	}
	h, err := newHandler(discard(), src, c)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(h http.Handler, method, target string, hdr map[string]string, tlsOn bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	if !tlsOn {
		r.TLS = nil
	} else {
		r.TLS = &tls.ConnectionState{}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestWellKnown(t *testing.T) {
	src := &staticSource{}
	for _, tc := range []struct {
		name       string
		cfg        handlerConfig
		method     string
		path       string
		hdr        map[string]string
		tls        bool
		code       int
		issuer     string
		jwks       string
		bodySubstr string
	}{
		{name: "https by default", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "https://localhost", jwks: "https://localhost/keys"},
		{name: "port kept", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost:8443"}, code: 200, issuer: "https://localhost:8443", jwks: "https://localhost:8443/keys"},
		{name: "insecure scheme", cfg: handlerConfig{allowInsecureScheme: true}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "http://localhost", jwks: "http://localhost/keys"},
		{name: "insecure scheme over TLS", cfg: handlerConfig{allowInsecureScheme: true}, tls: true, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "https://localhost", jwks: "https://localhost/keys"},
		{name: "insecure scheme behind https proxy", cfg: handlerConfig{allowInsecureScheme: true}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost", "X-Forwarded-Proto": "HTTPS"}, code: 200, issuer: "https://localhost", jwks: "https://localhost/keys"},
		{name: "Forwarded proto", cfg: handlerConfig{allowInsecureScheme: true}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost", "Forwarded": "for=1.2.3.4;proto=https"}, code: 200, issuer: "https://localhost"},
		{name: "X-Forwarded-Scheme", cfg: handlerConfig{allowInsecureScheme: true}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost", "X-Forwarded-Scheme": "https"}, code: 200, issuer: "https://localhost"},
		{name: "forwarded host", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "internal", "X-Forwarded-Host": "domain.test"}, code: 200, issuer: "https://domain.test", jwks: "https://domain.test/keys"},
		{name: "forwarded host refused", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost", "X-Forwarded-Host": "evil.test"}, code: 400, bodySubstr: `domain "evil.test" is not allowed`},
		{name: "host refused", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "evil.test:443"}, code: 400, bodySubstr: `domain "evil.test" is not allowed`},
		{name: "host not punycode", path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "bücher.test"}, code: 400, bodySubstr: "must already be punycode encoded"},
		{name: "jwt issuer", cfg: handlerConfig{jwtIssuer: mustURL(t, "https://issuer.test/td")}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "https://issuer.test/td", jwks: "https://issuer.test/td/keys"},
		{name: "jwks uri", cfg: handlerConfig{jwtIssuer: mustURL(t, "https://issuer.test/td"), jwksURI: mustURL(t, "https://keys.test/jwks")}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "https://issuer.test/td", jwks: "https://keys.test/jwks"},
		{name: "prefix", cfg: handlerConfig{pathPrefix: "/instance/1"}, path: "/instance/1/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 200, issuer: "https://localhost/instance/1", jwks: "https://localhost/instance/1/keys"},
		{name: "prefix not at root", cfg: handlerConfig{pathPrefix: "/instance/1"}, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 404},
		{name: "post", method: http.MethodPost, path: "/.well-known/openid-configuration", hdr: map[string]string{"Host": "localhost"}, code: 405, bodySubstr: "method not allowed"},
		{name: "unknown path", path: "/other", hdr: map[string]string{"Host": "localhost"}, code: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			w := get(testHandler(t, src, tc.cfg), method, tc.path, tc.hdr, tc.tls)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if tc.bodySubstr != "" && !strings.Contains(w.Body.String(), tc.bodySubstr) {
				t.Errorf("body %q lacks %q", w.Body, tc.bodySubstr)
			}
			if tc.code != 200 {
				return
			}
			var doc discoveryDocument
			if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Issuer != tc.issuer || (tc.jwks != "" && doc.JWKSURI != tc.jwks) {
				t.Errorf("issuer %q jwks_uri %q, want %q %q", doc.Issuer, doc.JWKSURI, tc.issuer, tc.jwks)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

// TestWellKnownDocument checks the whole document, byte for byte as
// SPIRE's provider writes it.
func TestWellKnownDocument(t *testing.T) {
	w := get(testHandler(t, &staticSource{}, handlerConfig{}), "GET", "/.well-known/openid-configuration", map[string]string{"Host": "domain.test"}, true)
	want := `{
  "issuer": "https://domain.test",
  "jwks_uri": "https://domain.test/keys",
  "authorization_endpoint": "",
  "response_types_supported": [
    "id_token"
  ],
  "subject_types_supported": [
    "public"
  ],
  "id_token_signing_alg_values_supported": [
    "RS256",
    "ES256",
    "ES384"
  ]
}`
	if w.Body.String() != want {
		t.Fatalf("document:\n%s\nwant:\n%s", w.Body, want)
	}
}

func TestKeys(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa2k, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1k, _ := rsa.GenerateKey(rand.Reader, 1024)
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	src := &staticSource{ok: true, mod: mod, keys: []jose.JSONWebKey{
		{Key: &ec256.PublicKey, KeyID: "a"},
		{Key: &ec384.PublicKey, KeyID: "b"},
		{Key: &rsa2k.PublicKey, KeyID: "c"},
		{Key: &ec521.PublicKey, KeyID: "d"},
		{Key: &rsa1k.PublicKey, KeyID: "e"},
	}}
	for _, setUse := range []bool{false, true} {
		w := get(testHandler(t, src, handlerConfig{setKeyUse: setUse}), "GET", "/keys", map[string]string{"Host": "anything.test"}, true)
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil {
			t.Fatal(err)
		}
		wantAlg := map[string]any{"a": "ES256", "b": "ES384", "c": "RS256", "d": nil, "e": nil}
		if len(set.Keys) != 5 {
			t.Fatalf("keys %v", set.Keys)
		}
		for _, k := range set.Keys {
			kid := k["kid"].(string)
			if k["alg"] != wantAlg[kid] {
				t.Errorf("kid %s alg %v, want %v", kid, k["alg"], wantAlg[kid])
			}
			if use, has := k["use"]; setUse != has || (has && use != "sig") {
				t.Errorf("set_key_use %v: kid %s use %v", setUse, kid, use)
			}
		}
		for h, v := range map[string]string{"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0", "Content-Type": "application/json", "Last-Modified": mod.Format(http.TimeFormat)} {
			if got := w.Header().Get(h); got != v {
				t.Errorf("%s = %q, want %q", h, got, v)
			}
		}
	}
	if src.keys[0].Use != "" || src.keys[0].Algorithm != "" {
		t.Error("serving the keys changed the source's copy")
	}
	h := testHandler(t, src, handlerConfig{})
	if w := get(h, "GET", "/keys", map[string]string{"If-Modified-Since": mod.Format(http.TimeFormat)}, true); w.Code != http.StatusNotModified {
		t.Errorf("conditional GET: %d, want 304", w.Code)
	}
	if w := get(h, "PUT", "/keys", nil, true); w.Code != 405 {
		t.Errorf("PUT: %d", w.Code)
	}
	w := get(testHandler(t, &staticSource{}, handlerConfig{}), "GET", "/keys", nil, true)
	if w.Code != 500 || !strings.Contains(w.Body.String(), "document not available") {
		t.Errorf("no keys yet: %d %q", w.Code, w.Body)
	}
}

func TestHealth(t *testing.T) {
	now := time.Now()
	cfg := HealthChecks{BindPort: 8008, LivePath: "/live", ReadyPath: "/ready"}
	for _, tc := range []struct {
		name        string
		last, start time.Time
		ready, live int
	}{
		{"fresh keys", now.Add(-time.Minute), now.Add(-time.Hour), 200, 200},
		{"stale keys", now.Add(-4 * time.Minute), now.Add(-time.Hour), 500, 500},
		{"never polled, just started", time.Time{}, now.Add(-time.Minute), 500, 200},
		{"never polled for too long", time.Time{}, now.Add(-4 * time.Minute), 500, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHealthHandler(&staticSource{lastRun: tc.last}, cfg, 10*time.Second)
			h.start, h.now = tc.start, func() time.Time { return now }
			for path, want := range map[string]int{"/ready": tc.ready, "/live": tc.live} {
				if w := get(h, "GET", path, nil, false); w.Code != want {
					t.Errorf("%s: %d, want %d", path, w.Code, want)
				}
			}
		})
	}
	h := newHealthHandler(&staticSource{}, cfg, time.Second)
	if w := get(h, "POST", "/ready", nil, false); w.Code != 405 {
		t.Errorf("POST: %d", w.Code)
	}
	if w := get(h, "GET", "/other", nil, false); w.Code != 404 {
		t.Errorf("other path: %d", w.Code)
	}
	if got := healthThreshold(time.Minute); got != 5*time.Minute {
		t.Errorf("threshold of 1m polls: %v, want 5m", got)
	}
	if got := healthThreshold(10 * time.Second); got != 3*time.Minute {
		t.Errorf("threshold of 10s polls: %v, want 3m", got)
	}
}

func TestAllowDomains(t *testing.T) {
	if _, err := allowDomains("bücher.test"); err == nil {
		t.Fatal("non-punycode domain accepted")
	}
	p, err := allowDomains("xn--bcher-kva.test", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	for d, ok := range map[string]bool{"localhost": true, "xn--bcher-kva.test": true, "bücher.test": false, "LOCALHOST": false, "": false, "evil.test": false} {
		if err := p(d); (err == nil) != ok {
			t.Errorf("%q: %v, want allowed=%v", d, err, ok)
		}
	}
}
