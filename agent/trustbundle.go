package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/agent/config"
)

// Bounds on a trust_bundle_url download: a bundle is a few certificates,
// and the agent must not hang on, or buffer without end from, a server
// that is not the one it expected.
const (
	maxBundleSize   = 4 << 20
	bundleFetchTime = 30 * time.Second
)

// bootstrapBundle is the source of the bundle that verifies the server on
// first contact (trust_bundle_path or trust_bundle_url), read each time
// the agent bootstraps, as SPIRE's trustbundlesources does.
type bootstrapBundle struct {
	ac  config.Agent
	log *slog.Logger
	// client fetches https:// URLs; it trusts the system roots, as
	// SPIRE's does (tests set their own).
	client *http.Client

	mu       sync.Mutex
	attempts int
	start    time.Time
}

func newBootstrapBundle(ac config.Agent, log *slog.Logger) *bootstrapBundle {
	client := &http.Client{Timeout: bundleFetchTime}
	if ac.TrustBundleUnixSocket != "" {
		sock := ac.TrustBundleUnixSocket
		client.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}
	}
	return &bootstrapBundle{ac: ac, log: log, client: client}
}

// fetch returns the bootstrap bundle's X.509 authorities.
func (b *bootstrapBundle) fetch(ctx context.Context, rebootstrap bool) ([]*x509.Certificate, error) {
	if b.ac.TrustBundleURL == "" {
		return loadTrustBundle(b.ac)
	}
	u, err := b.url(rebootstrap)
	if err != nil {
		return nil, err
	}
	data, err := b.download(ctx, u)
	if err != nil {
		return nil, err
	}
	certs, err := parseTrustBundle(b.ac.TrustDomain, data, b.ac.TrustBundleFormat)
	if err != nil {
		return nil, fmt.Errorf("agent: trust_bundle_url %s: %w", b.ac.TrustBundleURL, err)
	}
	return certs, nil
}

// url is trust_bundle_url; through trust_bundle_unix_socket it carries
// SPIRE's parameters, which let the local service tell a first bootstrap
// from a rebootstrap and see how long the agent has been trying.
func (b *bootstrapBundle) url(rebootstrap bool) (string, error) {
	u, err := url.Parse(b.ac.TrustBundleURL)
	if err != nil {
		return "", fmt.Errorf("agent: trust_bundle_url: %w", err)
	}
	b.mu.Lock()
	b.attempts++
	if b.start.IsZero() {
		b.start = time.Now()
	}
	attempts, start := b.attempts, b.start
	b.mu.Unlock()
	mode := "bootstrap"
	if rebootstrap {
		mode = "rebootstrap"
	}
	b.log.Info("Fetching the bootstrap trust bundle", "url", b.ac.TrustBundleURL, "mode", mode, "attempt", attempts)
	if b.ac.TrustBundleUnixSocket == "" {
		return u.String(), nil
	}
	q := u.Query()
	q.Set("spire-attest-mode", mode)
	q.Set("spire-connection-attempts", strconv.Itoa(attempts))
	q.Set("spire-attest-start-time", start.Format(time.RFC3339))
	q.Set("spire-server-address", b.ac.ServerAddress)
	q.Set("spire-server-port", strconv.Itoa(b.ac.ServerPort))
	q.Set("spiffe-trust-domain", b.ac.TrustDomain.Name())
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (b *bootstrapBundle) download(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("agent: trust_bundle_url: %w", err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent: unable to fetch trust bundle URL %s: %w", b.ac.TrustBundleURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent: error downloading trust bundle from %s: %s", b.ac.TrustBundleURL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("agent: read trust bundle from %s: %w", b.ac.TrustBundleURL, err)
	}
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("agent: trust bundle from %s is larger than %d bytes", b.ac.TrustBundleURL, maxBundleSize)
	}
	return data, nil
}

// loadTrustBundle reads trust_bundle_path.
func loadTrustBundle(ac config.Agent) ([]*x509.Certificate, error) {
	if ac.TrustBundlePath == "" {
		return nil, nil // insecure_bootstrap or trust_bundle_url, checked by config
	}
	data, err := os.ReadFile(ac.TrustBundlePath)
	if err != nil {
		return nil, fmt.Errorf("agent: read trust_bundle_path: %w", err)
	}
	certs, err := parseTrustBundle(ac.TrustDomain, data, ac.TrustBundleFormat)
	if err != nil {
		return nil, fmt.Errorf("agent: trust_bundle_path %s: %w", ac.TrustBundlePath, err)
	}
	return certs, nil
}

// parseTrustBundle parses a bootstrap bundle in trust_bundle_format: PEM
// certificates, or a SPIFFE bundle (JWKS) whose X.509 authorities count.
func parseTrustBundle(td spiffeid.TrustDomain, data []byte, format string) ([]*x509.Certificate, error) {
	if format == config.TrustBundleSPIFFE {
		b, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, err
		}
		if len(b.X509Authorities()) == 0 {
			return nil, errors.New("SPIFFE bundle holds no X.509 authority")
		}
		return b.X509Authorities(), nil
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate found (trust_bundle_format is %q)", format)
	}
	return certs, nil
}
