package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// EndpointLimits bound the bundle endpoint's listener. Zero fields take
// the defaults of DefaultEndpointLimits.
type EndpointLimits struct {
	// MaxConnections caps the open connections in total, and
	// MaxConnectionsPerSource those of one source IP address.
	MaxConnections          int
	MaxConnectionsPerSource int
	// HandshakeTimeout bounds the TLS handshake and the request headers
	// (SPIRE's ReadHeaderTimeout is 10 s); IdleTimeout closes a kept-alive
	// connection with no request, WriteTimeout one whose reader stalls.
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	WriteTimeout     time.Duration
}

// DefaultEndpointLimits are generous for foreign servers, which fetch a few
// times per refresh hint, and small enough that one source cannot hold the
// listener.
var DefaultEndpointLimits = EndpointLimits{
	MaxConnections:          1024,
	MaxConnectionsPerSource: 16,
	HandshakeTimeout:        10 * time.Second,
	IdleTimeout:             30 * time.Second,
	WriteTimeout:            30 * time.Second,
}

func (l EndpointLimits) withDefaults() EndpointLimits {
	d := DefaultEndpointLimits
	if l.MaxConnections > 0 {
		d.MaxConnections = l.MaxConnections
	}
	if l.MaxConnectionsPerSource > 0 {
		d.MaxConnectionsPerSource = l.MaxConnectionsPerSource
	}
	if l.HandshakeTimeout > 0 {
		d.HandshakeTimeout = l.HandshakeTimeout
	}
	if l.IdleTimeout > 0 {
		d.IdleTimeout = l.IdleTimeout
	}
	if l.WriteTimeout > 0 {
		d.WriteTimeout = l.WriteTimeout
	}
	return d
}

// EndpointConfig configures the bundle endpoint.
type EndpointConfig struct {
	// Address is host:port to listen on.
	Address     string
	TrustDomain spiffeid.TrustDomain
	// DataStore holds the bundle served.
	DataStore datastore.DataStore
	// RefreshHint is advertised as spiffe_refresh_hint.
	RefreshHint time.Duration
	// GetCertificate is the profile's server certificate: the server's
	// X.509-SVID for https_spiffe, a file or ACME certificate for
	// https_web. It is called on every handshake, so rotation needs no
	// restart.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NextProtos are extra ALPN protocols (ACME's TLS-ALPN-01).
	NextProtos []string
	Limits     EndpointLimits
	Log        *slog.Logger
}

// Endpoint serves this trust domain's bundle as a SPIFFE bundle document
// on GET /, as SPIRE's bundle endpoint does.
type Endpoint struct {
	cfg    EndpointConfig
	ln     *connlimit.Listener
	srv    *http.Server
	bundle bundleCache
}

// bundleCacheTTL keeps a flood of fetches from becoming a flood of
// datastore reads; a new authority is still served within a second.
const bundleCacheTTL = time.Second

type bundleCache struct {
	mu      sync.Mutex
	doc     []byte
	fetched time.Time
}

// NewEndpoint binds the listener; Serve serves on it.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if cfg.GetCertificate == nil {
		return nil, errors.New("federation: bundle endpoint: no server certificate")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	l, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("federation: bundle endpoint: %w", err)
	}
	e := &Endpoint{cfg: cfg}
	e.ln = connlimit.Wrap(l, connlimit.Config{
		Name:    "bundle_endpoint",
		Total:   cfg.Limits.MaxConnections,
		PerKey:  cfg.Limits.MaxConnectionsPerSource,
		Key:     sourceIP,
		KeyName: "source",
		Log:     cfg.Log,
	})
	e.srv = &http.Server{
		Handler: http.HandlerFunc(e.serveHTTP),
		TLSConfig: &tls.Config{
			GetCertificate: cfg.GetCertificate,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     append([]string{"h2", "http/1.1"}, cfg.NextProtos...),
		},
		ReadHeaderTimeout: cfg.Limits.HandshakeTimeout,
		ReadTimeout:       cfg.Limits.HandshakeTimeout,
		WriteTimeout:      cfg.Limits.WriteTimeout,
		IdleTimeout:       cfg.Limits.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return e, nil
}

func sourceIP(c net.Conn) (string, error) {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	return host, err
}

// Addr is the bound address.
func (e *Endpoint) Addr() net.Addr { return e.ln.Addr() }

// Serve serves until ctx ends.
func (e *Endpoint) Serve(ctx context.Context) error {
	e.cfg.Log.Info("Serving bundle endpoint", "addr", e.Addr().String(), "refresh_hint", e.cfg.RefreshHint)
	errCh := make(chan error, 1)
	go func() { errCh <- e.srv.ServeTLS(e.ln, "", "") }()
	select {
	case err := <-errCh:
		return fmt.Errorf("federation: bundle endpoint: %w", err)
	case <-ctx.Done():
		e.srv.Close()
		<-errCh
		return nil
	}
}

// Close closes the listener; after Serve it has nothing left to do.
func (e *Endpoint) Close() error {
	if err := e.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (e *Endpoint) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	doc, err := e.document(r.Context())
	if err != nil {
		e.cfg.Log.Error("Unable to retrieve local bundle", "error", err)
		http.Error(w, "500 unable to retrieve local bundle", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
}

// document is the bundle as served: the stored bundle's authorities and
// sequence number, with the configured refresh hint.
func (e *Endpoint) document(ctx context.Context) ([]byte, error) {
	c := &e.bundle
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doc != nil && time.Since(c.fetched) < bundleCacheTTL {
		return c.doc, nil
	}
	pb, err := e.cfg.DataStore.FetchBundle(ctx, e.cfg.TrustDomain.Name())
	if err != nil {
		return nil, err
	}
	sb, err := bundleFromProto(pb)
	if err != nil {
		return nil, err
	}
	if e.cfg.RefreshHint > 0 {
		sb.SetRefreshHint(e.cfg.RefreshHint)
	}
	doc, err := sb.Marshal()
	if err != nil {
		return nil, fmt.Errorf("unable to marshal local bundle: %w", err)
	}
	c.doc, c.fetched = doc, time.Now()
	return doc, nil
}
