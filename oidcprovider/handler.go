package oidcprovider

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// discoveryDocument is the OIDC discovery document. The fields after
// jwks_uri are required by the OIDC specification and fixed by what SPIRE's
// JWT-SVIDs are.
type discoveryDocument struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	AuthorizationEndpoint            string   `json:"authorization_endpoint"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// handlerConfig is what the HTTP handler needs from the configuration.
type handlerConfig struct {
	policy              domainPolicy
	allowInsecureScheme bool
	setKeyUse           bool
	jwtIssuer, jwksURI  *url.URL
	pathPrefix          string
}

// handler serves the discovery document and the key set at their exact
// paths; anything else is 404.
type handler struct {
	handlerConfig
	log                 *slog.Logger
	source              keySource
	wellKnown, keysPath string
}

// newHandler builds the handler; the prefix must have passed config
// validation.
func newHandler(log *slog.Logger, source keySource, c handlerConfig) (*handler, error) {
	if c.pathPrefix == "" {
		c.pathPrefix = "/"
	}
	wk, err := url.JoinPath(c.pathPrefix, "/.well-known/openid-configuration")
	if err != nil {
		return nil, fmt.Errorf("oidcprovider: server_path_prefix: %w", err)
	}
	keys, err := url.JoinPath(c.pathPrefix, "/keys")
	if err != nil {
		return nil, fmt.Errorf("oidcprovider: server_path_prefix: %w", err)
	}
	return &handler{handlerConfig: c, log: log, source: source, wellKnown: wk, keysPath: keys}, nil
}

// ServeHTTP matches the path exactly rather than through a ServeMux
// pattern, so that no server_path_prefix can be read as pattern syntax.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case h.wellKnown:
		h.serveWellKnown(w, r)
	case h.keysPath:
		h.serveKeys(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (h *handler) serveWellKnown(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host, scheme := forwarded(r)
	urlScheme := "https"
	if h.allowInsecureScheme && r.TLS == nil && scheme != "https" {
		urlScheme = "http"
	}
	if err := h.policy(hostDomain(host)); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	issuer := h.jwtIssuer
	if issuer == nil {
		issuer = &url.URL{Scheme: urlScheme, Host: host}
		if h.pathPrefix != "/" {
			issuer.Path = h.pathPrefix
		}
	}
	var jwksURI *url.URL
	switch {
	case h.jwksURI != nil:
		jwksURI = h.jwksURI
	case h.jwtIssuer != nil:
		// SPIRE's behaviour: jwt_issuer without jwks_uri moves the keys
		// under the issuer.
		p, err := url.JoinPath(h.jwtIssuer.Path, "keys")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		jwksURI = &url.URL{Scheme: h.jwtIssuer.Scheme, Host: h.jwtIssuer.Host, Path: p}
	default:
		p, err := url.JoinPath(h.pathPrefix, "keys")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		jwksURI = &url.URL{Scheme: urlScheme, Host: host, Path: p}
	}

	doc, err := json.MarshalIndent(discoveryDocument{
		Issuer:                           issuer.String(),
		JWKSURI:                          jwksURI.String(),
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"RS256", "ES256", "ES384"},
	}, "", "  ")
	if err != nil {
		http.Error(w, "failed to marshal document", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
}

// forwardedProto finds proto= in a Forwarded header (RFC 7239).
var forwardedProto = regexp.MustCompile(`(?i)(?:proto=)(https|http)`)

// forwarded returns the host and scheme a request was made with, taking a
// reverse proxy's X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Scheme
// and Forwarded headers into account as SPIRE does (gorilla's
// ProxyHeaders). The host is still checked against the allowed domains.
func forwarded(r *http.Request) (host, scheme string) {
	host = r.Host
	if v := r.Header.Get("X-Forwarded-Host"); v != "" {
		host = v
	}
	scheme = r.URL.Scheme
	switch {
	case r.Header.Get("X-Forwarded-Proto") != "":
		scheme = strings.ToLower(r.Header.Get("X-Forwarded-Proto"))
	case r.Header.Get("X-Forwarded-Scheme") != "":
		scheme = strings.ToLower(r.Header.Get("X-Forwarded-Scheme"))
	default:
		if m := forwardedProto.FindStringSubmatch(r.Header.Get("Forwarded")); len(m) > 1 {
			scheme = strings.ToLower(m[1])
		}
	}
	return host, scheme
}

func (h *handler) serveKeys(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	keys, modTime, ok := h.source.KeySet()
	if !ok {
		http.Error(w, "document not available", http.StatusInternalServerError)
		return
	}
	for i := range keys {
		if h.setKeyUse {
			keys[i].Use = "sig"
		}
		alg, err := algorithmOf(keys[i].Key)
		if err != nil {
			h.log.Error("Failed to get public key algorithm", "kid", keys[i].KeyID, "error", err)
		}
		keys[i].Algorithm = alg
	}
	body, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: keys}, "", "  ")
	if err != nil {
		http.Error(w, "failed to marshal JWKS", http.StatusInternalServerError)
		return
	}
	// Relying parties must see a rotation at once: no caching, but
	// Last-Modified lets them revalidate cheaply.
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("Expires", "0")
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "keys", modTime, bytes.NewReader(body))
}

// algorithmOf is the JWS algorithm a JWT authority signs with.
func algorithmOf(key any) (string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.Size() < 256 {
			return "", fmt.Errorf("unsupported RSA key size: %d", k.Size())
		}
		return string(jose.RS256), nil
	case *ecdsa.PublicKey:
		switch k.Params().BitSize {
		case 256:
			return string(jose.ES256), nil
		case 384:
			return string(jose.ES384), nil
		default:
			return "", fmt.Errorf("unable to determine signature algorithm for EC public key size %d", k.Params().BitSize)
		}
	}
	return "", fmt.Errorf("unable to determine signature algorithm for public key type %T", key)
}
