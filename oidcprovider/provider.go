package oidcprovider

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-hw/spire-hw/internal/connlimit"
	"github.com/spiffe-hw/spire-hw/internal/unixsock"
)

// ErrACMEUnsupported is returned for a configuration with an acme block:
// ACME needs an ACME CA (Let's Encrypt) reachable over the internet and the
// provider reachable from it on port 443, which this build does not
// attempt. Use serving_cert_file with a certificate obtained elsewhere, or
// insecure_addr / listen_socket_path behind a TLS-terminating proxy.
var ErrACMEUnsupported = errors.New("oidcprovider: the acme section is not supported by spire-hw: ACME needs an ACME CA reachable over the internet (use serving_cert_file with a certificate obtained elsewhere, or insecure_addr or listen_socket_path behind a TLS-terminating proxy)")

// Limits bound what one peer, and all peers together, can hold of the
// provider. They are not configuration keys (SPIRE has none); Options
// override them in tests.
type Limits struct {
	// MaxConns caps open connections in total, MaxConnsPerPeer those
	// from one source address (TCP listeners only: behind a Unix socket
	// every request comes from the same proxy).
	MaxConns, MaxConnsPerPeer int
	// ReadHeaderTimeout also bounds the TLS handshake.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                                            int
}

// DefaultLimits are generous for relying parties, which fetch two small
// documents now and then, and tight for a peer that opens connections and
// sends nothing.
var DefaultLimits = Limits{
	MaxConns:          1024,
	MaxConnsPerPeer:   32,
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       15 * time.Second,
	WriteTimeout:      15 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    16 << 10,
}

// Provider is a configured discovery provider: its listeners are bound
// and its source is polling once New returns.
type Provider struct {
	cfg      *Config
	log      *slog.Logger
	limits   Limits
	source   *poller
	closers  []func() error
	ln       net.Listener
	healthLn net.Listener
	certs    *certFile
	srv      *http.Server
	health   *http.Server
	// polled, set by tests, hears of every poll of the source.
	polled chan<- struct{}
}

// Option changes how New builds a Provider.
type Option func(*Provider)

// WithLimits replaces DefaultLimits.
func WithLimits(l Limits) Option { return func(p *Provider) { p.limits = l } }

// New binds the listeners and starts polling the key source.
func New(cfg *Config, log *slog.Logger, opts ...Option) (_ *Provider, err error) {
	if cfg.ACME != nil {
		return nil, ErrACMEUnsupported
	}
	p := &Provider{cfg: cfg, log: log, limits: DefaultLimits}
	for _, o := range opts {
		o(p)
	}
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	for _, w := range cfg.Warnings {
		log.Warn("Configuration warning", "warning", w)
	}

	policy, err := allowDomains(cfg.Domains...)
	if err != nil {
		return nil, err
	}
	if err := p.newSource(); err != nil {
		return nil, err
	}
	h, err := newHandler(log, p.source, handlerConfig{
		policy:              policy,
		allowInsecureScheme: cfg.AllowInsecureScheme,
		setKeyUse:           cfg.SetKeyUse,
		jwtIssuer:           cfg.JWTIssuer,
		jwksURI:             cfg.JWKSURI,
		pathPrefix:          cfg.ServerPathPrefix,
	})
	if err != nil {
		return nil, err
	}
	var handler http.Handler = h
	if cfg.LogRequests {
		log.Info("Logging all requests")
		handler = logRequests(log, handler)
	}
	if err := p.listen(); err != nil {
		return nil, err
	}
	p.srv = p.httpServer(handler)
	if cfg.HealthChecks != nil {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.HealthChecks.BindPort))
		if err != nil {
			return nil, fmt.Errorf("oidcprovider: health checks: %w", err)
		}
		p.healthLn = p.limit(ln, "health checks", true)
		p.closers = append(p.closers, ln.Close)
		p.health = p.httpServer(newHealthHandler(p.source, *cfg.HealthChecks, p.source.interval))
	}
	p.source.start()
	return p, nil
}

// newSource builds the poller of the configured key source.
func (p *Provider) newSource() error {
	c := p.cfg
	switch {
	case c.ServerAPI != nil:
		conn, err := dialServerAPI(c.ServerAPI.Address)
		if err != nil {
			return err
		}
		p.closers = append(p.closers, conn.Close)
		p.source = newPoller(p.log, c.ServerAPI.PollInterval, "Failed to fetch bundle", serverAPIFetch(p.log, conn))
	case c.WorkloadAPI != nil:
		// A relative path would read as the authority of a unix:// URL.
		abs, err := filepath.Abs(c.WorkloadAPI.SocketPath)
		if err != nil {
			return fmt.Errorf("oidcprovider: workload API: %w", err)
		}
		client, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+abs))
		if err != nil {
			return fmt.Errorf("oidcprovider: workload API: %w", err)
		}
		p.closers = append(p.closers, client.Close)
		p.source = newPoller(p.log, c.WorkloadAPI.PollInterval, "Failed to fetch JWKS from the Workload API", workloadAPIFetch(p.log, client, c.WorkloadAPI.TrustDomain))
	case c.File != nil:
		p.source = newPoller(p.log, c.File.PollInterval, "Failed to load SPIFFE trust bundle", fileFetch(c.File.Path))
	default:
		return errors.New("oidcprovider: no source has been configured")
	}
	p.source.polled = p.polled
	return nil
}

// listen binds the one configured listener.
func (p *Provider) listen() error {
	c := p.cfg
	switch {
	case c.InsecureAddr != "":
		ln, err := net.Listen("tcp", c.InsecureAddr)
		if err != nil {
			return fmt.Errorf("oidcprovider: insecure_addr: %w", err)
		}
		p.closers = append(p.closers, ln.Close)
		p.ln = p.limit(ln, "OIDC discovery", true)
		p.log.Warn("Serving HTTP (insecure)", "address", ln.Addr().String())
	case c.ListenSocketPath != "":
		// World-accessible, as SPIRE makes it: the documents are public,
		// and the proxy in front may run as any user.
		ln, err := unixsock.Listen(c.ListenSocketPath, 0o777, 0o755)
		if err != nil {
			return fmt.Errorf("oidcprovider: listen_socket_path: %w", err)
		}
		p.closers = append(p.closers, ln.Close)
		p.ln = p.limit(ln, "OIDC discovery", false)
		p.log.Info("Serving HTTP", "network", ln.Addr().Network(), "address", ln.Addr().String())
	case c.ServingCertFile != nil:
		certs, err := newCertFile(p.log, c.ServingCertFile)
		if err != nil {
			return err
		}
		ln, err := net.ListenTCP("tcp", c.ServingCertFile.Addr)
		if err != nil {
			return fmt.Errorf("failed to create listener using certificate from disk: %w", err)
		}
		p.closers = append(p.closers, ln.Close)
		p.certs = certs
		p.ln = tls.NewListener(p.limit(ln, "OIDC discovery", true), certs.tlsConfig())
		p.log.Info("Serving HTTPS using certificate loaded from disk", "cert_file_path", c.ServingCertFile.CertFilePath, "address", ln.Addr().String())
	default:
		return errors.New("oidcprovider: no listener has been configured")
	}
	return nil
}

// limit caps ln's connections; perPeer keys them by source IP.
func (p *Provider) limit(ln net.Listener, name string, perPeer bool) net.Listener {
	cfg := connlimit.Config{Name: name, Total: p.limits.MaxConns, Log: p.log}
	if perPeer {
		cfg.PerKey, cfg.KeyName = p.limits.MaxConnsPerPeer, "source"
		cfg.Key = func(c net.Conn) (string, error) {
			host, _, err := net.SplitHostPort(c.RemoteAddr().String())
			return host, err
		}
	}
	return connlimit.Wrap(ln, cfg)
}

func (p *Provider) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: p.limits.ReadHeaderTimeout,
		ReadTimeout:       p.limits.ReadTimeout,
		WriteTimeout:      p.limits.WriteTimeout,
		IdleTimeout:       p.limits.IdleTimeout,
		MaxHeaderBytes:    p.limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
}

// Addr is the address the documents are served on.
func (p *Provider) Addr() net.Addr { return p.ln.Addr() }

// HealthAddr is the health checks' address, nil without health_checks.
func (p *Provider) HealthAddr() net.Addr {
	if p.healthLn == nil {
		return nil
	}
	return p.healthLn.Addr()
}

// Run serves until ctx ends, then shuts the servers down and releases the
// source and listeners.
func (p *Provider) Run(ctx context.Context) error {
	defer p.closeAll()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.certs != nil {
		go p.certs.watch(ctx)
	}
	errs := make(chan error, 2)
	go func() { errs <- p.srv.Serve(p.ln) }()
	n := 1
	if p.health != nil {
		n++
		p.log.Info("Serving health checks", "address", p.healthLn.Addr().String())
		go func() { errs <- p.health.Serve(p.healthLn) }()
	}
	var err error
	select {
	case err = <-errs:
		n--
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = p.srv.Shutdown(sctx)
	if p.health != nil {
		_ = p.health.Shutdown(sctx)
	}
	for ; n > 0; n-- {
		<-errs
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (p *Provider) closeAll() {
	if p.source != nil {
		p.source.Close()
	}
	for i := len(p.closers) - 1; i >= 0; i-- {
		_ = p.closers[i]()
	}
	p.closers = nil
}

// logRequests logs every request at DEBUG, with SPIRE's keys.
func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Debug("Incoming request", "remote-addr", r.RemoteAddr, "method", r.Method, "url", r.URL.String(), "user-agent", r.UserAgent())
		h.ServeHTTP(w, r)
	})
}
