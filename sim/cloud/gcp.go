package cloud

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// GCPIssuer is the issuer of instance identity tokens.
const GCPIssuer = "https://accounts.google.com"

// GCPInstance describes the simulated Compute Engine instance.
type GCPInstance struct {
	ProjectID         string
	ProjectNumber     int64
	Zone              string
	InstanceID        string
	InstanceName      string
	CreationTimestamp int64
	ServiceAccount    string
	Tags              []string
	Labels            map[string]string
	Metadata          map[string]string
}

// DefaultGCPInstance is a plausible instance.
func DefaultGCPInstance() GCPInstance {
	return GCPInstance{
		ProjectID: "project-123", ProjectNumber: 987654321012, Zone: "us-central1-a",
		InstanceID: "4412341234123412341", InstanceName: "blog-1", CreationTimestamp: 1767225600,
		ServiceAccount: "123456789-compute@developer.gserviceaccount.com",
		Tags:           []string{"blog-server", "http"},
		Labels:         map[string]string{"env": "prod", "team": "web"},
		Metadata:       map[string]string{"role": "frontend", "startup-script": "#!/bin/sh\necho hi\n"},
	}
}

// GCPConfig configures StartGCP.
type GCPConfig struct {
	// Instance defaults to DefaultGCPInstance().
	Instance *GCPInstance
	// CertsMaxAge sets the Expires header of the certs endpoint (default
	// one hour).
	CertsMaxAge time.Duration
}

// GCP is a running GCP simulator.
type GCP struct {
	srv           *server
	inst          GCPInstance
	maxAge        time.Duration
	saKey         *rsa.PrivateKey
	saEmail       string
	bearer        bearerTokens
	certsRequests atomic.Int64

	mu    sync.Mutex
	key   *signingKey
	certs map[string]string // kid -> PEM certificate, old keys included
}

// StartGCP starts the metadata server (/computeMetadata/v1/...), the
// certs endpoint (/oauth2/v1/certs), a JWT-bearer token endpoint (/token)
// and the Compute API (/compute/v1/...) on one loopback listener.
func StartGCP(cfg GCPConfig) (*GCP, error) {
	g := &GCP{inst: DefaultGCPInstance(), maxAge: cfg.CertsMaxAge, certs: map[string]string{}}
	if cfg.Instance != nil {
		g.inst = *cfg.Instance
	}
	if g.maxAge <= 0 {
		g.maxAge = time.Hour
	}
	if err := g.RotateKey(); err != nil {
		return nil, err
	}
	var err error
	if g.saKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, fmt.Errorf("cloud: gcp: generate key: %w", err)
	}
	g.saEmail = "spire-server@" + g.inst.ProjectID + ".iam.gserviceaccount.com"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /computeMetadata/v1/instance/service-accounts/{sa}/identity", g.identity)
	mux.HandleFunc("GET /oauth2/v1/certs", g.serveCerts)
	mux.HandleFunc("POST /token", g.token)
	mux.HandleFunc("GET /compute/v1/projects/{project}/zones/{zone}/instances/{name}", g.instance)
	if g.srv, err = startServer("gcp", mux); err != nil {
		return nil, err
	}
	return g, nil
}

// Close stops the simulator.
func (g *GCP) Close() error { return g.srv.close() }

// Instance is the simulated instance.
func (g *GCP) Instance() GCPInstance { return g.inst }

// MetadataHost is the agent's identity_token_host (host:port, plain HTTP).
func (g *GCP) MetadataHost() string { return strings.TrimPrefix(g.srv.url, "http://") }

// CertsURL is the server's certs_url.
func (g *GCP) CertsURL() string { return g.srv.url + "/oauth2/v1/certs" }

// ComputeEndpoint is the server's compute_endpoint.
func (g *GCP) ComputeEndpoint() string { return g.srv.url + "/compute/v1/" }

// CertsRequests counts fetches of the certs endpoint.
func (g *GCP) CertsRequests() int64 { return g.certsRequests.Load() }

// ServiceAccountJSON is a service account key file (the format
// `gcloud iam service-accounts keys create` writes) whose token_uri is
// this simulator.
func (g *GCP) ServiceAccountJSON() []byte {
	b, _ := json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": g.inst.ProjectID, "private_key_id": "sim",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(g.saKey)})),
		"client_email": g.saEmail, "token_uri": g.srv.url + "/token",
	}, "", "  ")
	return b
}

// RotateKey adds a new signing key; the old one stays in the certs
// document, as Google keeps keys published while tokens may use them.
func (g *GCP) RotateKey() error {
	k, err := newSigningKey()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "simulated-iit-signer"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(14 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.key.PublicKey, k.key)
	if err != nil {
		return fmt.Errorf("cloud: gcp: certificate: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.key = k
	g.certs[k.kid] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return nil
}

// KeyID is the key ID of the current signing key.
func (g *GCP) KeyID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.key.kid
}

// Claims returns the claims of a full-format identity token for audience,
// valid now.
func (g *GCP) Claims(audience string) map[string]any {
	now := time.Now()
	i := g.inst
	return map[string]any{
		"iss": GCPIssuer, "aud": audience, "azp": "102345678901234567890", "sub": "102345678901234567890",
		"email": i.ServiceAccount, "email_verified": true,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"google": map[string]any{"compute_engine": map[string]any{
			"project_id": i.ProjectID, "project_number": i.ProjectNumber, "zone": i.Zone,
			"instance_id": i.InstanceID, "instance_name": i.InstanceName,
			"instance_creation_timestamp": i.CreationTimestamp,
		}},
	}
}

// MintToken signs claims with the current key.
func (g *GCP) MintToken(claims map[string]any) (string, error) {
	g.mu.Lock()
	k := g.key
	g.mu.Unlock()
	return k.mint(claims)
}

func (g *GCP) identity(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	if r.PathValue("sa") != "default" && r.PathValue("sa") != g.inst.ServiceAccount {
		http.Error(w, "service account not found", http.StatusNotFound)
		return
	}
	if q.Get("audience") == "" {
		http.Error(w, "audience is required", http.StatusBadRequest)
		return
	}
	claims := g.Claims(q.Get("audience"))
	if q.Get("format") != "full" {
		delete(claims, "google")
	}
	tok, err := g.MintToken(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	_, _ = w.Write([]byte(tok))
}

func (g *GCP) serveCerts(w http.ResponseWriter, _ *http.Request) {
	g.certsRequests.Add(1)
	g.mu.Lock()
	certs := make(map[string]string, len(g.certs))
	for k, v := range g.certs {
		certs[k] = v
	}
	g.mu.Unlock()
	w.Header().Set("Expires", time.Now().Add(g.maxAge).UTC().Format(http.TimeFormat))
	writeJSON(w, certs)
}

func (g *GCP) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	deny := func(why string) {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]string{"error": "invalid_grant", "error_description": why})
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		deny("unsupported grant_type")
		return
	}
	tok, err := jwt.ParseSigned(r.PostForm.Get("assertion"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		deny("malformed assertion")
		return
	}
	var c jwt.Claims
	if err := tok.Claims(&g.saKey.PublicKey, &c); err != nil {
		deny("invalid signature")
		return
	}
	if err := c.Validate(jwt.Expected{Issuer: g.saEmail, AnyAudience: []string{g.srv.url + "/token"}, Time: time.Now()}); err != nil {
		deny(err.Error())
		return
	}
	writeJSON(w, map[string]any{"access_token": g.bearer.issue(), "token_type": "Bearer", "expires_in": 3599})
}

func (g *GCP) instance(w http.ResponseWriter, r *http.Request) {
	if !g.bearer.valid(r) {
		w.WriteHeader(http.StatusUnauthorized)
		writeJSON(w, map[string]any{"error": map[string]any{"code": 401, "message": "Request is missing required authentication credential."}})
		return
	}
	i := g.inst
	if r.PathValue("project") != i.ProjectID || r.PathValue("zone") != i.Zone || r.PathValue("name") != i.InstanceName {
		w.WriteHeader(http.StatusNotFound)
		writeJSON(w, map[string]any{"error": map[string]any{"code": 404, "message": "not found"}})
		return
	}
	var items []map[string]string
	for k, v := range i.Metadata {
		items = append(items, map[string]string{"key": k, "value": v})
	}
	writeJSON(w, map[string]any{
		"kind": "compute#instance", "id": i.InstanceID, "name": i.InstanceName,
		"zone":            "projects/" + i.ProjectID + "/zones/" + i.Zone,
		"tags":            map[string]any{"items": i.Tags},
		"labels":          i.Labels,
		"metadata":        map[string]any{"items": items},
		"serviceAccounts": []map[string]any{{"email": i.ServiceAccount, "scopes": []string{"https://www.googleapis.com/auth/cloud-platform"}}},
	})
}
