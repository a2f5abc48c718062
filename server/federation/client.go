package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Profile names, as in SPIRE's configuration and API.
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// Relationship is what the refresher needs to know of a federation
// relationship.
type Relationship struct {
	TrustDomain spiffeid.TrustDomain
	// EndpointURL is the bundle endpoint; only https URLs are fetched.
	EndpointURL string
	// EndpointSPIFFEID, for https_spiffe, is the ID the endpoint's
	// X.509-SVID must carry; zero for https_web.
	EndpointSPIFFEID spiffeid.ID
}

// Profile is https_spiffe when the relationship names an endpoint SPIFFE
// ID, https_web otherwise.
func (r Relationship) Profile() string {
	if r.EndpointSPIFFEID.IsZero() {
		return ProfileHTTPSWeb
	}
	return ProfileHTTPSSPIFFE
}

// Client fetches bundles from bundle endpoints.
type Client struct {
	// WebRoots verifies https_web endpoints; nil uses the system roots
	// (which SSL_CERT_FILE and SSL_CERT_DIR can point elsewhere).
	WebRoots *x509.CertPool
	// Timeout bounds a whole fetch, connection to last byte; zero means
	// 30 seconds.
	Timeout time.Duration

	// dial, when set, replaces the dialer (tests pick a source address).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Fetch downloads and checks the bundle of rel.TrustDomain. For
// https_spiffe, endpointRoots are the X.509 authorities of the endpoint
// SPIFFE ID's trust domain, from the datastore.
func (c *Client) Fetch(ctx context.Context, rel Relationship, endpointRoots []*x509.Certificate) (*spiffebundle.Bundle, error) {
	u, err := url.Parse(rel.EndpointURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("federation: bundle endpoint URL %q is not an https URL", rel.EndpointURL)
	}
	var tlsConf *tls.Config
	if rel.EndpointSPIFFEID.IsZero() {
		tlsConf = &tls.Config{RootCAs: c.WebRoots, MinVersion: tls.VersionTLS12}
	} else {
		if len(endpointRoots) == 0 {
			return nil, errors.New("federation: can't perform SPIFFE Authentication: local copy of bundle not found")
		}
		roots := x509bundle.FromX509Authorities(rel.EndpointSPIFFEID.TrustDomain(), endpointRoots)
		tlsConf = tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(rel.EndpointSPIFFEID))
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	dial := c.dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dial,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableKeepAlives:      true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rel.EndpointURL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var hostErr x509.HostnameError
		if errors.As(err, &hostErr) && rel.EndpointSPIFFEID.IsZero() && len(hostErr.Certificate.URIs) > 0 {
			if id, idErr := spiffeid.FromURI(hostErr.Certificate.URIs[0]); idErr == nil {
				return nil, fmt.Errorf("federation: failed to authenticate bundle endpoint using web authentication but the server certificate contains SPIFFE ID %q: maybe use https_spiffe instead of https_web: %w", id, err)
			}
		}
		return nil, fmt.Errorf("federation: failed to fetch bundle: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("federation: unexpected status %d fetching bundle: %q", resp.StatusCode, snippet)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("federation: failed to read bundle: %w", err)
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("federation: bundle exceeds the %d-byte limit", MaxBundleSize)
	}
	return ParseBundle(rel.TrustDomain, data)
}
